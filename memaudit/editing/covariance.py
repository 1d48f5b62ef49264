"""The preserved keys' statistics: the second moment ``E[k k^T]`` of one layer's MLP keys over a
corpus sample, estimated once per (model, layer, sample) and kept on disk.

The keys are the inputs of a block's MLP output projection (``c_proj`` / ``down_proj``) at every
token of the sample, cut into windows of the model's context. The estimate is stored as
safetensors under ``<cache root>/editing/covariance/`` (``$MEMAUDIT_CACHE`` or
``~/.cache/memaudit``), named by a hash of the model's fingerprint, the layer, the token stream
itself and the window, so a second run reads it back without a forward pass and a change of
tokenizer, sample or window never reads a stale one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memaudit.errors import InputError
from memaudit.io.atomic import atomic_output
from memaudit.models.anatomy import blocks, mlp_output_module, weight_io

VERSION = 2
WINDOW = 128


@dataclass(frozen=True)
class KeyMoment:
    """``moment`` (d_in, d_in, float64): the mean of ``k k^T`` over ``n_tokens`` keys."""

    moment: torch.Tensor
    n_tokens: int
    forward_passes: int  # 0 when read from the cache
    path: Path | None


def cache_path(
    root: Path, *, fingerprint: str, layer: int, stream: np.ndarray, window: int = WINDOW
) -> Path:
    """Where ``layer``'s statistics over ``stream`` cut into ``window``-token rows are kept."""
    h = hashlib.sha256(json.dumps([VERSION, fingerprint, layer, window]).encode())
    h.update(np.ascontiguousarray(stream, dtype=np.int64).tobytes())
    return root / "editing" / "covariance" / f"{h.hexdigest()[:24]}.safetensors"


def windows_of(model, stream: np.ndarray, window: int = WINDOW) -> torch.Tensor:
    """(W, window): the stream cut into rows no longer than the model's context."""
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    window = min(window, context, len(stream))
    n_windows = len(stream) // window
    return torch.as_tensor(stream[: n_windows * window].reshape(n_windows, window))


def key_moment(
    model: Any,
    stream: np.ndarray,
    layer: int,
    *,
    window: int = WINDOW,
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

    Raises
    ------
    InputError
        Fewer tokens than the layer has key dimensions: the moment would be singular, and
        ROME and EMMET invert it.
    """
    if path is not None and path.is_file():
        from safetensors.torch import load_file

        stored = load_file(str(path))
        return KeyMoment(stored["moment"], int(stored["n_tokens"].item()), 0, path)
    module = mlp_output_module(blocks(model)[layer], who="editing")
    rows = windows_of(model, stream, window)  # (W, window)
    d_in = weight_io(module).shape[0]
    if rows.numel() < d_in:
        raise InputError(
            f"--covariance-tokens: block {layer}'s key statistics need at least {d_in} tokens "
            f"(its MLP width), the sample gives {rows.numel()}"
        )
    sums: list[torch.Tensor] = []  # on the model's device until the end
    passes = 0

    def hook(mod, args):
        keys = args[0].reshape(-1, args[0].shape[-1]).double()  # (B*T, d_in)
        sums.append(keys.T @ keys if not sums else sums.pop() + keys.T @ keys)

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for s in range(0, len(rows), batch_size):
                model(input_ids=rows[s : s + batch_size].to(model.device))
                passes += 1
    finally:
        handle.remove()
    moment = sums[0].cpu() / rows.numel()
    if path is not None:
        _store(path, moment, rows.numel())
    return KeyMoment(moment, rows.numel(), passes, path)


def _store(path: Path, moment: torch.Tensor, n_tokens: int) -> None:
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    data = save({"moment": moment.contiguous(), "n_tokens": torch.tensor([n_tokens])})
    with atomic_output(path) as fh:
        fh.write(data)


def check_invertible(moment: torch.Tensor, layer: int) -> None:
    """ROME and EMMET solve with ``C``; a sample that leaves a key direction unseen makes it
    singular, which is refused here, before anything is written, instead of deep in a solve."""
    if int(torch.linalg.cholesky_ex(moment).info) != 0:
        raise InputError(
            f"block {layer}'s key statistics are singular (some key direction never occurs in "
            "the sample); give more --covariance-tokens or another --covariance-corpus"
        )
