"""``unlearn --eval-every``: the cheap measures of ``unlearn-eval``, on the model in memory, along
the run.

At step 0 (the model as loaded), every N steps and at the last step: forget exact extraction
and mean token NLL, the loss attack's AUC forget vs holdout (with ``--holdout``), and the mean
NLL of a fixed set of retain windows. One teacher-forced forward pass per text (batched) gives
them all: greedy decoding from a prompt reproduces the continuation iff every continuation
token is the argmax, so exact extraction needs no generation. The measures are unlearn-eval's
(same prompts, same token spans, token-weighted NLL), so the curve's last point equals what
unlearn-eval reports for the saved model (tested); no checkpoint is written for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from memaudit.io.texts import TextRecord
from memaudit.lab.evaluate import prefix_cut
from memaudit.metrics import roc_auc

from .loop import pad_batch, token_logp

EVAL_FILE = "eval.jsonl"


@dataclass(frozen=True)
class EvalSet:
    """What every evaluation of a run measures; fixed at the start."""

    forget: list[list[int]]  # token ids of each forget text (the model's encoding, no EOS added)
    prompts: list[int]  # prompt tokens of each forget text
    holdout: list[list[int]] | None  # None: no --holdout, MIA skipped
    retain: torch.Tensor | None  # (N, T) fixed retain windows; None: no --retain
    suffix_tokens: int
    batch_size: int  # texts per forward pass
    pad_id: int

    def notes(self) -> list[str]:
        """What the curve leaves out, and why."""
        out = []
        if self.holdout is None:
            out.append("MIA AUC skipped: no --holdout")
        if self.retain is None:
            out.append("retain NLL skipped: no --retain")
        return out


def prompt_length(tokenizer, record: TextRecord, ids: list[int], prefix_tokens: int) -> int:
    """Tokens of the text given as the prompt, as unlearn-eval takes them: up to its ``prefix``
    field when it has one (canaries), else ``prefix_tokens`` (at most half the text)."""
    prefix = record.meta.get("prefix")
    if isinstance(prefix, str) and prefix and record.text.startswith(prefix):
        return prefix_cut(tokenizer, ids, prefix)
    return max(1, min(prefix_tokens, len(ids) // 2))


@torch.no_grad()
def token_stats(
    model, seqs: Sequence[Sequence[int]], pad_id: int, batch_size: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per sequence, one forward pass per batch: the log-probability of each token after the
    first and whether it is the argmax, (len - 1,) each."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        ids, mask = pad_batch(chunk, pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
        logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
        is_max = logits.argmax(-1) == ids[:, 1:]  # (B, T-1)
        for r, s in enumerate(chunk):
            n = len(s) - 1
            out.append((logp[r, :n].cpu().numpy(), is_max[r, :n].cpu().numpy()))
    return out


@torch.no_grad()
def evaluate_now(model, data: EvalSet, step: int) -> dict:
    """One point of the curve: the measures of ``model`` as it is at ``step``."""
    was_training = model.training
    model.eval()
    try:
        texts = data.forget + (data.holdout or [])
        stats = token_stats(model, texts, data.pad_id, data.batch_size)
        forget = stats[: len(data.forget)]
        exact = [
            bool(flags[k - 1 : k - 1 + data.suffix_tokens].all())
            for (_, flags), k in zip(forget, data.prompts)
        ]
        point: dict = {
            "step": step,
            "forget_exact": float(np.mean(exact)),
            # token-weighted: all forget tokens' NLL over their count, as unlearn-eval's mean
            "forget_nll": float(
                -sum(lp.sum() for lp, _ in forget) / sum(len(lp) for lp, _ in forget)
            ),
            "mia_auc": None,
            "retain_nll": None,
        }
        if data.holdout is not None:
            # the loss attack: mean token log-likelihood, members (forget) labelled 1
            scores = [float(lp.mean()) for lp, _ in stats]
            labels = [1] * len(data.forget) + [0] * len(data.holdout)
            point["mia_auc"] = roc_auc(scores, labels)
        if data.retain is not None:
            point["retain_nll"] = _windows_nll(model, data.retain, data.batch_size)
        return point
    finally:
        model.train(was_training)


def _windows_nll(model, windows: torch.Tensor, batch_size: int) -> float:
    """Mean token NLL of equal-length windows (N, T)."""
    device = next(model.parameters()).device
    total = 0.0
    for start in range(0, len(windows), batch_size):
        ids = windows[start : start + batch_size].to(device)  # (B, T)
        total -= float(token_logp(model, ids, torch.ones_like(ids))[0].sum())
    return total / (windows.shape[0] * (windows.shape[1] - 1))


def describe_point(point: dict) -> str:
    """The progress line of one evaluation."""
    parts = [f"forget exact {point['forget_exact']:.3f}", f"forget NLL {point['forget_nll']:.3f}"]
    if point["mia_auc"] is not None:
        parts.append(f"MIA AUC {point['mia_auc']:.3f}")
    if point["retain_nll"] is not None:
        parts.append(f"retain NLL {point['retain_nll']:.3f}")
    return ", ".join(parts)
