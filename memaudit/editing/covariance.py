"""The preserved keys' statistics: the second moment ``E[k k^T]`` of one layer's MLP keys over a
corpus sample, estimated once per (model, layer, sample) and kept on disk.

The keys are the inputs of a block's MLP output projection (``c_proj`` / ``down_proj``) at every
token of the sample, cut into windows of the model's context. The estimate is stored as
safetensors under ``<cache root>/editing/covariance/`` (``$MEMAUDIT_CACHE`` or
``~/.cache/memaudit``), named by a hash of the model's fingerprint, the layer, the sample's
digest and its size, so a second run reads it back without a forward pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memaudit.io.atomic import atomic_output
from memaudit.models.anatomy import blocks, mlp_output_module, weight_io

VERSION = 1


@dataclass(frozen=True)
class KeyMoment:
    """``moment`` (d_in, d_in, float64): the mean of ``k k^T`` over ``n_tokens`` keys."""

    moment: torch.Tensor
    n_tokens: int
    forward_passes: int  # 0 when read from the cache
    path: Path | None


def cache_path(
    root: Path, *, fingerprint: str, layer: int, sample_digest: str, tokens: int
) -> Path:
    key = json.dumps([VERSION, fingerprint, layer, sample_digest, tokens])
    name = hashlib.sha256(key.encode()).hexdigest()[:24]
    return root / "editing" / "covariance" / f"{name}.safetensors"


def key_moment(
    model: Any,
    stream: np.ndarray,
    layer: int,
    *,
    window: int = 128,
    batch_size: int = 16,
    path: Path | None = None,
) -> KeyMoment:
    """The second moment of ``layer``'s MLP keys over the token ``stream`` (cut into windows of
    ``window`` tokens), read from ``path`` when it is there, else computed and written there.

    Parameters
    ----------
    model : a transformers causal LM
    stream : (N,) int array of token ids
    layer : block index
    path : where the estimate is kept (``cache_path``); None keeps nothing
    """
    if path is not None and path.is_file():
        from safetensors.torch import load_file

        stored = load_file(str(path))
        return KeyMoment(stored["moment"], int(stored["n_tokens"].item()), 0, path)
    module = mlp_output_module(blocks(model)[layer], who="editing")
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    window = min(window, context, len(stream))
    n_windows = len(stream) // window
    rows = torch.as_tensor(stream[: n_windows * window].reshape(n_windows, window))  # (W, window)
    d_in = weight_io(module).shape[0]
    total = torch.zeros(d_in, d_in, dtype=torch.float64)
    passes = 0

    def hook(mod, args):
        keys = args[0].reshape(-1, args[0].shape[-1]).double()  # (B*T, d_in)
        total.add_(keys.T @ keys)

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for s in range(0, len(rows), batch_size):
                model(input_ids=rows[s : s + batch_size].to(model.device))
                passes += 1
    finally:
        handle.remove()
    moment = total / rows.numel()
    if path is not None:
        _store(path, moment, rows.numel())
    return KeyMoment(moment, rows.numel(), passes, path)


def _store(path: Path, moment: torch.Tensor, n_tokens: int) -> None:
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    data = save({"moment": moment.contiguous(), "n_tokens": torch.tensor([n_tokens])})
    with atomic_output(path) as fh:
        fh.write(data)


def sample_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return h.hexdigest()
