"""A zoo model dir as ``probe recall`` sees a model: ``ZooRecallModel`` (vocabulary, context,
argmax predictor, ``describe()``), and the MQAR training record its ``zoo.json`` keeps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

Predictor = Callable[[np.ndarray], np.ndarray]  # (B, T) ids -> (B, T) predicted next ids


def is_zoo_dir(path) -> bool:
    """Whether ``path`` is a model dir written by ``save_zoo_model`` (it holds ``zoo.json``)."""
    from .zoo.model import RECORD

    return (Path(path) / RECORD).is_file()


def zoo_training(model_dir) -> dict | None:
    """The MQAR training record a zoo model dir keeps in its ``zoo.json`` ``extra``, or None."""
    from .zoo.model import read_zoo_record

    extra = read_zoo_record(model_dir).get("extra") or {}
    return extra if extra.get("task") == "mqar" else None


def zoo_predictor(model, batch_size: int = 64) -> Predictor:
    """Argmax next tokens of a ``ZooLM``."""

    @torch.no_grad()
    def predict(ids: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(ids), batch_size):
            x = torch.as_tensor(ids[start : start + batch_size], dtype=torch.long)  # (B, T)
            out.append(model(x).argmax(-1).numpy())  # (B, T)
        return np.concatenate(out)

    return predict


class ZooRecallModel:
    """A ``ZooLM`` as ``mqar_grid`` and the run header see a model: vocabulary, context,
    predictor, ``describe()`` (arch, config, state floats, weights fingerprint).
    """

    def __init__(
        self,
        model,
        *,
        path: str | None = None,
        fingerprint: str | None = None,
        lengths: Sequence[int] = (),
    ) -> None:
        self.model = model
        self.path = path
        self.lengths = tuple(lengths)  # describe() gives the state at each
        self.vocab_size = model.cfg.vocab
        self.max_length = model.cfg.max_len
        self.device = torch.device("cpu")
        self._fingerprint = fingerprint or weights_fingerprint(model)

    @classmethod
    def load(cls, model_dir, *, lengths: Sequence[int] = ()) -> ZooRecallModel:
        from .zoo import load_zoo_model

        return cls(load_zoo_model(model_dir), path=str(model_dir), lengths=lengths)

    def fingerprint(self) -> str:
        return self._fingerprint

    def predictor(self) -> Predictor:
        return zoo_predictor(self.model)

    def describe(self) -> dict:
        from dataclasses import asdict

        cfg = self.model.cfg
        return {
            "kind": "zoo",
            "path": self.path,
            "arch": cfg.arch,
            "config": asdict(cfg),
            "n_params": sum(p.numel() for p in self.model.parameters()),
            "dtype": "float32",
            "device": "cpu",
            "state_floats": {str(L): self.model.state_floats(L) for L in self.lengths},
            "fingerprint": self._fingerprint,
        }


def weights_fingerprint(model) -> str:
    """sha256 over the parameter names, shapes and float32 bytes, in state-dict order."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(json.dumps([name, list(t.shape)]).encode())
        h.update(t.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()
