"""The one unlearning loop every gradient method shares.

Each step takes the next forget batch (the forget sequences, shuffled once, cycled) and a
retain batch (random windows of the retain token stream, a pure function of the step),
computes :class:`~memaudit.unlearn.methods.StepInputs` and takes an AdamW step on the
method's loss. The reference log-probabilities NPO needs are computed once, before the
first step, from the model itself: no second model is kept in memory. Two methods need more
than the forget and retain batches, and are given it: ``idk_dpo`` an alternative sequence
per forget sequence (``alternatives``, idk.py), ``rmu`` a :class:`~memaudit.unlearn.rmu.Steering`
(the block it reads, the few weights it trains, the original's activations).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from memaudit.errors import InputError

from .methods import Activations, Method, StepInputs
from .rmu import Steering


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


def token_logp(model, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each row's tokens after the first, and 1 where a token is scored:
    (B, T-1), (B, T-1).
    """
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]  # (B, T-1, V)
    targets, scored = ids[:, 1:], mask[:, 1:].float()  # (B, T-1)
    logp = (
        torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    )  # (B, T-1)
    return logp, scored


def sequence_logp(
    model, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's tokens after the first, and how many were scored:
    (B,), (B,).
    """
    logp, scored = token_logp(model, ids, mask)
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
    alternatives: Sequence[Sequence[int]] | None = None,
    steering: Steering | None = None,
) -> list[dict]:
    """Run ``settings.steps`` steps of ``method``; returns one log entry per step.

    ``alternatives`` (one per forget sequence) and ``steering`` are required by the methods
    that declare ``needs_alternatives`` and ``needs_activations``, and ignored otherwise.
    """
    if method.needs_alternatives and (alternatives is None or len(alternatives) != len(forget)):
        raise ValueError(f"method '{method.name}' needs one alternative per forget sequence")
    if method.needs_activations and (steering is None or retain_batch is None):
        raise ValueError(f"method '{method.name}' needs a Steering and retain batches")
    alternatives = alternatives if method.needs_alternatives else None
    steering = steering if method.needs_activations else None
    device = next(model.parameters()).device
    torch.manual_seed(settings.seed)
    order = np.random.default_rng(settings.seed).permutation(len(forget))
    reference = alt_reference = None
    if method.needs_reference:
        reference = _reference_logp(model, forget, pad_id, settings.batch_size)
        if alternatives is not None:
            alt_reference = _reference_logp(model, alternatives, pad_id, settings.batch_size)
    beta = settings.beta if settings.beta is not None else method.default_beta
    use_retain = retain_batch is not None and (method.needs_retain or method.uses_retain)
    # only what is trainable: under LoRA the adapters, so no moments are kept for frozen weights
    trainable = [p for p in model.parameters() if p.requires_grad]
    trained = trainable if steering is None else steering.trained
    # rmu: the other weights take no gradient, as in the WMDP code (restored after the loop)
    frozen = [] if steering is None else _freeze_all_but(model, steering.trained)
    optimizer = torch.optim.AdamW(trained, lr=settings.lr, weight_decay=0.0)
    model.train()
    log = []
    try:
        for step in range(settings.steps):
            rows = [
                order[(step * settings.batch_size + i) % len(forget)]
                for i in range(min(settings.batch_size, len(forget)))
            ]
            ids, mask = pad_batch([forget[r] for r in rows], pad_id, device)
            with _capture(steering) as forget_hidden:
                tokens, scored = token_logp(model, ids, mask)  # (B, T-1) each
            logp, n = (tokens * scored).sum(1), scored.sum(1)
            retain_nll = None
            with _capture(steering) as retain_hidden:
                if use_retain and retain_batch is not None:
                    batch = retain_batch(step).to(device)  # (B, T)
                    retain_nll = model(input_ids=batch, labels=batch).loss
            alt_logp = None
            if alternatives is not None:
                alt_logp = sequence_logp(
                    model, *pad_batch([alternatives[r] for r in rows], pad_id, device)
                )[0]
            activations = None
            if steering is not None:
                activations = Activations(
                    forget_hidden[0],
                    mask,
                    retain_hidden[0],
                    steering.original_hidden(model, batch, torch.ones_like(batch)),
                    steering.target,
                    steering.alpha,
                )
            x = StepInputs(
                logp,
                n,
                None if reference is None else reference[rows].to(device),
                retain_nll,
                beta,
                settings.gamma,
                settings.retain_weight,
                forget_length=mask.sum(1),
                forget_token_logp=tokens,
                forget_token_mask=scored,
                alternative_logp=alt_logp,
                alternative_reference_logp=None
                if alt_reference is None
                else alt_reference[rows].to(device),
                activations=activations,
            )
            loss = method.loss(x)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
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
    finally:  # also on an error (e.g. from on_step): the model is left as it came
        model.eval()
        for p in frozen:
            p.requires_grad_(True)
    return log


def _freeze_all_but(model, trained: Sequence[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    """Turn off the gradient of every parameter not in ``trained``; returns those turned off."""
    keep = {id(p) for p in trained}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in keep]
    for p in frozen:
        p.requires_grad_(False)
    return frozen


@contextmanager
def _capture(steering: Steering | None) -> Iterator[list[torch.Tensor]]:
    """The steered block's outputs of the passes run inside (none without a steering)."""
    if steering is None:
        yield []
        return
    with steering.capture() as seen:
        yield seen


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
