"""What an edit writes where: the subject's key at a layer, the block output there, and the
change of that output that makes the model say the new target (ROME's and MEMIT's ``v*`` / ``z``).

Every function runs the requests as one right-padded batch (positions are unaffected by padding
on the right) and reads one position per request: the subject's last token.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from memaudit.models.anatomy import blocks, mlp_output_module

from .requests import Encoded


@dataclass(frozen=True)
class TargetSettings:
    """How ``v*`` is found: ``steps`` Adam steps of learning rate ``lr`` on the new target's NLL
    plus ``weight_decay`` times ``||delta||^2 / ||h||^2``, the change kept within
    ``clamp_norm`` times the block output's norm (ROME/MEMIT's ``clamp_norm_factor``)."""

    steps: int = 25
    lr: float = 0.5
    weight_decay: float = 0.5
    clamp_norm: float = 4.0


def _batch(encoded: Sequence[Encoded], *, prompt_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [e.ids[: e.target_start] if prompt_only else e.ids for e in encoded]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask  # (E, T) each


def _subject_rows(encoded: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(len(encoded)), torch.tensor([e.subject_last for e in encoded])


@torch.no_grad()
def subject_keys(model, encoded: Sequence[Encoded], layer: int) -> torch.Tensor:
    """(d_in, E): the input of ``layer``'s MLP output projection at each subject's last token."""
    module = mlp_output_module(blocks(model)[layer], who="editing")
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    try:
        ids, mask = _batch(encoded, prompt_only=True)
        model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device))
    finally:
        handle.remove()
    rows, cols = _subject_rows(encoded)
    return seen[0][rows, cols].double().T.cpu()


@torch.no_grad()
def block_outputs(model, encoded: Sequence[Encoded], layer: int) -> torch.Tensor:
    """(d_model, E): block ``layer``'s output (the residual stream) at each subject's last token."""
    seen: list[torch.Tensor] = []

    def hook(mod, args, output):
        seen.append(output[0] if isinstance(output, tuple) else output)

    handle = blocks(model)[layer].register_forward_hook(hook)
    try:
        ids, mask = _batch(encoded, prompt_only=True)
        model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device))
    finally:
        handle.remove()
    rows, cols = _subject_rows(encoded)
    return seen[0][rows, cols].double().T.cpu()


@contextmanager
def added_to_block(model, layer: int, encoded: Sequence[Encoded], delta: torch.Tensor) -> Iterator:
    """Forward passes inside add ``delta[i]`` (E, d_model) to block ``layer``'s output at
    request ``i``'s subject position."""
    rows, cols = _subject_rows(encoded)

    def hook(mod, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[rows, cols] = hidden[rows, cols] + delta.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = blocks(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def target_nll(model, encoded: Sequence[Encoded]) -> torch.Tensor:
    """(E,): each request's mean NLL of its target tokens after its prompt."""
    ids, mask = _batch(encoded, prompt_only=False)
    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
    logp = F.log_softmax(logits.float(), dim=-1)  # (E, T, V)
    out = []
    for i, e in enumerate(encoded):
        pos = torch.arange(e.target_start, len(e.ids))
        out.append(-logp[i, pos - 1, ids[i, pos]].mean())
    return torch.stack(out)


def target_deltas(
    model, encoded: Sequence[Encoded], layer: int, settings: TargetSettings = TargetSettings()
) -> Targets:
    """The change of block ``layer``'s output at each subject's last token that
    makes the model give its new target (gradient steps on the change only; weights untouched).
    """
    h = block_outputs(model, encoded, layer).T.float()  # (E, d_model)
    delta = torch.zeros_like(h, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=settings.lr)
    limit = settings.clamp_norm * h.norm(dim=1, keepdim=True)  # (E, 1)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for _ in range(settings.steps):
            with added_to_block(model, layer, encoded, delta):
                nll = target_nll(model, encoded)  # (E,)
            decay = settings.weight_decay * (delta.norm(dim=1) / h.norm(dim=1)) ** 2
            (nll + decay).sum().backward()
            opt.step()
            opt.zero_grad()
            with torch.no_grad():
                scale = (limit / delta.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
                delta.mul_(scale)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    with torch.no_grad(), added_to_block(model, layer, encoded, delta):
        reached = target_nll(model, encoded)
    return Targets(delta.detach().double().T, reached.tolist())


@dataclass(frozen=True)
class Targets:
    """``delta`` (d_model, E): the change found; ``nll``: each target's NLL with it applied (what
    the weight update then aims to reproduce)."""

    delta: torch.Tensor
    nll: list[float]
