"""Reasoning or reciting? Accuracy, consistency under perturbation, and LiMem, with bootstrap CIs.

``LiMem = Acc * (1 - CR)`` (Xie et al. 2024): ``CR`` is the share of the correctly solved
items that are still solved after a local perturbation. A model that reasons keeps its
answers consistent (CR near 1, LiMem near 0); one that recites its training answers solves
the originals and fails the perturbed ones (LiMem near Acc). The measure needs only two
boolean arrays, so any benchmark with a perturbation goes through it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def limem(correct, perturbed_correct) -> dict:
    """Accuracy, consistency ratio and LiMem of paired results.

    >>> limem([1, 1, 1, 0], [1, 0, 0, 0])
    {'accuracy': 0.75, 'consistency': 0.3333333333333333, 'limem': 0.5, 'perturbed_accuracy': 0.25}
    """
    c, pc = np.asarray(correct, bool), np.asarray(perturbed_correct, bool)
    if c.shape != pc.shape:
        raise ValueError("correct and perturbed_correct must pair up")
    acc = float(c.mean()) if len(c) else math.nan
    cr = float(pc[c].mean()) if c.any() else math.nan
    return {
        "accuracy": acc,
        "consistency": cr,
        "limem": acc * (1 - cr) if c.any() else 0.0,
        "perturbed_accuracy": float(pc.mean()) if len(pc) else math.nan,
    }


def limem_with_ci(correct, perturbed_correct, *, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """``limem`` plus 95% percentile-bootstrap intervals over items."""
    c, pc = np.asarray(correct, bool), np.asarray(perturbed_correct, bool)
    point = limem(c, pc)
    rng = np.random.default_rng(seed)
    draws = (
        [limem(c[i], pc[i]) for i in (rng.integers(0, len(c), len(c)) for _ in range(n_bootstrap))]
        if len(c)
        else []
    )
    out: dict[str, Any] = {"n": int(len(c))}
    for key, value in point.items():
        vals = np.array([d[key] for d in draws], float)
        vals = vals[~np.isnan(vals)]
        ci = (
            [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]
            if len(vals)
            else [math.nan, math.nan]
        )
        out[key] = {"value": value, "ci": ci}
    return out
