"""Zoo models on MQAR: train one (``probe recall-train --arch <zoo name>``), and read one back
for ``probe recall``.

``--arch llama`` and ``--arch gpt2`` keep meaning the transformers micro models of
``train_mqar_model``; every other name is a mixer of ``memaudit.probes.zoo`` (``MIXERS``),
trained with the same MQAR batches, loss and optimizer (``recall.fit_mqar``) and saved with
``save_zoo_model``, the training record in the dir's ``memaudit_train.json`` as the
transformers models keep it, so ``probe recall`` reads the vocabulary and layout from it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from memaudit.errors import InputError
from memaudit.io.progress import Progress

from .recall import MQAR, Predictor, fit_mqar

from .config import HF_ARCHS  # noqa: E402,F401  (re-exported: --arch names of the transformers models)


def check_zoo_arch(arch: str, *, flag: str) -> None:
    """``arch`` is a registered mixer; else one line naming the flag, with "did you mean"."""
    from memaudit.errors import UnknownNameError

    from .zoo import MIXERS

    try:
        MIXERS.get(arch)
    except UnknownNameError as e:
        raise InputError(f"{flag}: {e}") from None


def zoo_config(
    arch: str,
    *,
    vocab: int,
    d_model: int,
    state: int | None,
    n_layers: int,
    max_len: int,
    flag: str = "--arch",
):
    """A checked ``ZooConfig``: an unknown arch (did you mean) or a state the arch cannot have is
    one ``InputError`` line, before anything is written.
    """
    from .zoo import ZooConfig

    check_zoo_arch(arch, flag=flag)
    cfg = ZooConfig(
        arch=arch, vocab=vocab, d_model=d_model, n_layers=n_layers, max_len=max_len, state=state
    )
    cfg.check()
    return cfg


@contextmanager
def one_thread() -> Iterator[None]:
    """Train on one torch thread (the numbers then do not depend on how many a worker has)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_zoo_mqar(
    cfg,
    tasks: list[MQAR],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: Progress | None = None,
):
    """(ZooLM, training record): a freshly initialised ``ZooLM(cfg)`` (seeded) trained on the
    ``tasks`` mix by ``fit_mqar``.
    """
    from .zoo import ZooLM

    torch.manual_seed(seed)
    model = ZooLM(cfg)
    record = fit_mqar(
        model, model, tasks, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress
    )
    record["parameters"] = sum(p.numel() for p in model.parameters())
    return model, record


def train_zoo_mqar_model(
    out_dir,
    *,
    arch: str,
    d_model: int,
    state: int | None,
    n_layers: int = 2,
    length: int = 32,
    pairs: int = 4,
    vocab: int = 64,
    layout: str = "zoology",
    alpha: float = 0.01,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """``probe recall-train`` for a zoo arch: one model trained on MQAR at one (length, pairs),
    saved with ``save_zoo_model``; every input is checked before ``out_dir`` is touched.
    """
    from memaudit.io.outdir import prepare_out_dir

    from .zoo import save_zoo_model

    cfg = zoo_config(
        arch,
        vocab=vocab,
        d_model=d_model,
        state=state,
        n_layers=n_layers,
        max_len=max(256, length),
    )
    task = MQAR(vocab, length, pairs, layout=layout, alpha=alpha)
    prepare_out_dir(out_dir, kind="model:zoo", overwrite=overwrite)
    with one_thread():
        model, record = fit_zoo_mqar(
            cfg, [task], steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress
        )
    extra = {
        **mqar_record(length=length, pairs=pairs, vocab=vocab, layout=layout, alpha=alpha),
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "arch": arch,
        "d_model": d_model,
        "state": state,
        "n_layers": n_layers,
        "seed": seed,
        "training": record,
    }
    return save_zoo_model(model, out_dir, extra=extra, overwrite=True)


def mqar_record(*, length: int, pairs: int, vocab: int, layout: str, alpha: float) -> dict:
    """The fields ``probe recall`` reads from a model's training record (``mqar_training``)."""
    return {
        "task": "mqar",
        "length": length,
        "pairs": pairs,
        "mqar_vocab": vocab,
        "layout": layout,
        "alpha": alpha,
    }


def is_zoo_dir(path) -> bool:
    """Whether ``path`` is a model dir written by ``save_zoo_model``."""
    from memaudit.io.outdir import read_marker

    p = Path(path)
    marker = read_marker(p) if p.is_dir() else None
    return bool(marker) and str(marker.get("kind", "")).startswith("model:zoo")


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

        try:
            model = load_zoo_model(model_dir)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise InputError(f"not a readable zoo model dir ({e})", path=str(model_dir)) from None
        return cls(model.eval(), path=str(model_dir), lengths=lengths)

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
