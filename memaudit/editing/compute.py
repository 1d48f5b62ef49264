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
def read_at_subjects(
    model, encoded: Sequence[Encoded], taps: Sequence[tuple[torch.nn.Module, str]]
) -> list[torch.Tensor]:
    """One forward pass over the prompts; for each ``(module, "input" | "output")`` tap, what
    flows there at each subject's last token, as a (dim, E) float64 CPU tensor."""
    seen: list[torch.Tensor | None] = [None] * len(taps)
    handles = []
    for i, (module, side) in enumerate(taps):
        if side == "input":

            def pre(mod, args, i=i):
                seen[i] = args[0]

            handles.append(module.register_forward_pre_hook(pre))
        else:

            def post(mod, args, output, i=i):
                seen[i] = output[0] if isinstance(output, tuple) else output

            handles.append(module.register_forward_hook(post))
    try:
        ids, mask = _batch(encoded, prompt_only=True)
        model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device))
    finally:
        for handle in handles:
            handle.remove()
    rows, cols = _subject_rows(encoded)
    return [t[rows, cols].double().T.cpu() for t in seen if t is not None]


def key_tap(model, layer: int) -> tuple[torch.nn.Module, str]:
    """Where the edit's key is read: the input of ``layer``'s MLP output projection."""
    return mlp_output_module(blocks(model)[layer], who="editing"), "input"


def output_tap(model, layer: int) -> tuple[torch.nn.Module, str]:
    """Block ``layer``'s output (the residual stream)."""
    return blocks(model)[layer], "output"


def subject_keys(model, encoded: Sequence[Encoded], layer: int) -> torch.Tensor:
    """(d_in, E): the input of ``layer``'s MLP output projection at each subject's last token."""
    return read_at_subjects(model, encoded, [key_tap(model, layer)])[0]


def block_outputs(model, encoded: Sequence[Encoded], layer: int) -> torch.Tensor:
    """(d_model, E): block ``layer``'s output (the residual stream) at each subject's last token."""
    return read_at_subjects(model, encoded, [output_tap(model, layer)])[0]


@contextmanager
def added_to_block(model, layer: int, encoded: Sequence[Encoded], delta: torch.Tensor) -> Iterator:
    """Forward passes inside add ``delta[i]`` (E, d_model) to block ``layer``'s output at
    request ``i``'s subject position."""
    rows, cols = _subject_rows(encoded)

    def hook(mod, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[rows, cols] = hidden[rows, cols] + delta.to(hidden.device, hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = blocks(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def target_nll(model, encoded: Sequence[Encoded]) -> torch.Tensor:
    """(E,): each request's mean NLL of its target tokens after its prompt."""
    ids, mask = (t.to(model.device) for t in _batch(encoded, prompt_only=False))
    logits = model(input_ids=ids, attention_mask=mask).logits
    logp = F.log_softmax(logits.float(), dim=-1)  # (E, T, V)
    out = []
    for i, e in enumerate(encoded):
        pos = torch.arange(e.target_start, len(e.ids), device=ids.device)
        out.append(-logp[i, pos - 1, ids[i, pos]].mean())
    return torch.stack(out)


def target_deltas(
    model, encoded: Sequence[Encoded], layer: int, settings: TargetSettings = TargetSettings()
) -> Targets:
    """The change of block ``layer``'s output at each subject's last token that
    makes the model give its new target (gradient steps on the change only; weights untouched).
    """
    h = block_outputs(model, encoded, layer).T.float().to(model.device)  # (E, d_model)
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
    return Targets(delta.detach().double().T.cpu(), reached.tolist())


@dataclass(frozen=True)
class Targets:
    """``delta`` (d_model, E): the change found; ``nll``: each target's NLL with it applied (what
    the weight update then aims to reproduce)."""

    delta: torch.Tensor
    nll: list[float]
