"""The one unlearning loop every gradient method shares.

Each step takes the next forget batch (the forget sequences, shuffled once, cycled) and a
retain batch (random windows of the retain token stream, a pure function of the step),
computes :class:`~memaudit.unlearn.methods.StepInputs` and takes an AdamW step on the
method's loss. The reference log-probabilities NPO needs are computed once, before the
first step, from the model itself: no second model is kept in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from memaudit.errors import InputError

from .methods import Method, StepInputs


@dataclass(frozen=True)
class LoopSettings:
    steps: int = 30
    lr: float = 5e-4
    batch_size: int = 16  # forget sequences per step
    retain_batch_size: int = 16
    seq_len: int = 128  # tokens per retain window
    beta: float | None = None  # None: the method's default
    gamma: float = 0.0
    retain_weight: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.retain_batch_size < 1 or self.seq_len < 2:
            raise InputError("steps, batch sizes must be >= 1 and seq_len >= 2")
        positive = [self.lr] + ([self.beta] if self.beta is not None else [])
        if not all(math.isfinite(x) and x > 0 for x in positive):
            raise InputError(f"lr and beta must be positive numbers, got {self.lr} and {self.beta}")
        if not all(math.isfinite(x) for x in (self.gamma, self.retain_weight)):
            raise InputError("gamma and retain_weight must be finite numbers")


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask, (B, T) each."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(list(s))
        mask[r, : len(s)] = 1
    return ids.to(device), mask.to(device)


def sequence_logp(
    model, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's tokens after the first, and how many were scored:
    (B,), (B,).
    """
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]  # (B, T-1, V)
    targets, scored = ids[:, 1:], mask[:, 1:].float()  # (B, T-1)
    logp = (
        torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    )  # (B, T-1)
    return (logp * scored).sum(1), scored.sum(1)


def unlearn_loop(
    model,
    forget: Sequence[Sequence[int]],
    retain_batch: Callable[[int], torch.Tensor] | None,
    method: Method,
    settings: LoopSettings,
    *,
    pad_id: int,
    on_step: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Run ``settings.steps`` steps of ``method``; returns one log entry per step."""
    device = next(model.parameters()).device
    torch.manual_seed(settings.seed)
    order = np.random.default_rng(settings.seed).permutation(len(forget))
    reference = (
        _reference_logp(model, forget, pad_id, settings.batch_size)
        if method.needs_reference
        else None
    )
    beta = settings.beta if settings.beta is not None else method.default_beta
    use_retain = retain_batch is not None and (method.needs_retain or method.uses_retain)
    # only what is trainable: under LoRA the adapters, so no moments are kept for frozen weights
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    model.train()
    log = []
    for step in range(settings.steps):
        rows = [
            order[(step * settings.batch_size + i) % len(forget)]
            for i in range(min(settings.batch_size, len(forget)))
        ]
        ids, mask = pad_batch([forget[r] for r in rows], pad_id, device)
        logp, n = sequence_logp(model, ids, mask)
        retain_nll = None
        if use_retain and retain_batch is not None:
            batch = retain_batch(step).to(device)  # (B, T)
            retain_nll = model(input_ids=batch, labels=batch).loss
        x = StepInputs(
            logp,
            n,
            None if reference is None else reference[rows].to(device),
            retain_nll,
            beta,
            settings.gamma,
            settings.retain_weight,
            forget_length=mask.sum(1),
        )
        loss = method.loss(x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        entry = {
            "step": step + 1,
            "loss": loss.item(),
            "forget_nll": (-logp.sum() / n.sum()).item(),
        }
        if retain_nll is not None:
            entry["retain_nll"] = retain_nll.item()
        log.append(entry)
        if on_step is not None:
            on_step(step + 1, entry)
    model.eval()
    return log


@torch.no_grad()
def _reference_logp(model, forget, pad_id: int, batch_size: int) -> torch.Tensor:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(forget), batch_size):
        ids, mask = pad_batch(forget[start : start + batch_size], pad_id, device)
        out.append(sequence_logp(model, ids, mask)[0].cpu())
    model.train(was_training)
    return torch.cat(out)
