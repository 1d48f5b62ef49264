"""ROME, MEMIT and EMMET applied to a model: keys and values from :mod:`.compute`, updates from
:mod:`.solve`, written into the MLP output projections in place.

- ``rome``: one layer; the edits one after another, each on the model the previous ones left
  (sequential ROME, the batch-size sweep's weak baseline).
- ``memit`` / ``emmet``: a batch at once over several layers. The new outputs ``z`` are found at
  the last edited layer; each layer, in order, takes its share of what is still missing there
  (``(z - h) / layers left``), MEMIT's spreading rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from memaudit.models.anatomy import blocks, mlp_output_module, set_weight_io, weight_io

from .compute import (
    TargetSettings,
    block_outputs,
    key_tap,
    output_tap,
    read_at_subjects,
    subject_keys,
    target_deltas,
)
from .requests import Encoded
from .solve import emmet_delta, memit_delta, rome_delta

METHODS = ("rome", "memit", "emmet")


@dataclass(frozen=True)
class EditSettings:
    method: str
    layers: tuple[int, ...]
    preservation_weight: float = 10.0  # C = weight * E[k k^T] (MEMIT's mom2_update_weight)
    emmet_ridge: float = 0.1  # EMMET's emmet_lambda
    target: TargetSettings = TargetSettings()


def _weight(model, layer: int) -> tuple[Any, torch.Tensor]:
    """The layer's MLP output projection and its weight as (d_out, d_in), float64 on the CPU
    (where the keys, values and statistics are: the solves never meet the model's device)."""
    module = mlp_output_module(blocks(model)[layer], who="editing")
    return module, weight_io(module).T.detach().double().cpu()


@torch.no_grad()
def _add(module: Any, W: torch.Tensor, delta: torch.Tensor) -> float:
    set_weight_io(module, (W + delta).T.to(module.weight.dtype))
    return float(delta.norm())


def apply_edits(
    model,
    encoded: Sequence[Encoded],
    moments: dict[int, torch.Tensor],
    settings: EditSettings,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Edit ``model`` in place; ``moments[layer]`` is that layer's ``E[k k^T]``. Returns one log
    entry per weight update (layer, edits, the update's norm)."""
    if settings.method == "rome":
        return _rome(model, encoded, moments, settings, progress)
    return _batched(model, encoded, moments, settings, progress)


def _rome(model, encoded, moments, settings: EditSettings, progress) -> list[dict]:
    (layer,) = settings.layers
    log = []
    for i, e in enumerate(encoded):
        k = subject_keys(model, [e], layer)[:, 0]  # (d_in,)
        found = target_deltas(model, [e], layer, settings.target)
        d = found.delta[:, 0]  # (d_model,)
        module, W = _weight(model, layer)
        norm = _add(module, W, rome_delta(W, moments[layer], k, W @ k + d))
        log.append({"layer": layer, "edits": [i], "update_norm": norm, "target_nll": found.nll})
        if progress:
            progress(i + 1, len(encoded))
    return log


def _batched(model, encoded, moments, settings: EditSettings, progress) -> list[dict]:
    last = settings.layers[-1]
    found = target_deltas(model, encoded, last, settings.target)
    z = block_outputs(model, encoded, last) + found.delta  # (d_model, E)
    log: list[dict] = [{"target_nll": found.nll}]
    for i, layer in enumerate(settings.layers):
        K, h = read_at_subjects(  # (d_in, E), (d_model, E): one pass for both
            model, encoded, [key_tap(model, layer), output_tap(model, last)]
        )
        missing = z - h
        module, W = _weight(model, layer)
        V = W @ K + missing / (len(settings.layers) - i)
        C = settings.preservation_weight * moments[layer]
        if settings.method == "memit":
            delta = memit_delta(W, C, K, V)
        else:
            delta = emmet_delta(W, C, K, V, ridge=settings.emmet_ridge)
        log.append({"layer": layer, "edits": len(encoded), "update_norm": _add(module, W, delta)})
        if progress:
            progress(i + 1, len(settings.layers))
    return log
