"""Noise-space memorization detection: which prompts (or classes) make a model reproduce training
images?

Asthana & Belagiannis (the authors' ``local_model/pipe.py``): from pure noise x_T, one call at
the first timestep gives the guidance norm ``N = ||eps(x_T, c) - eps(x_T, null)||``; a second
call on the same x_T, at a low timestep (41 of 1000), gives the alignment
``A = mean over pixels of cos(eps_null, eps_c - eps_null)`` (cosine over channels at each pixel;
for one-channel images that is the sign agreement). memaudit's earlier variant evaluates the
second call on x0 predicted from the first call and noised again with the same noise; it is
kept as ``alignment="renoised-x0"`` and reported as ``alignment_renoised_x0``.

The combined score ``g1 * N + g2 * A`` uses either the authors' fixed weights (one pair per
model they evaluated) or weights fitted by logistic regression on one half of the prompts and
applied to the other half (two-fold cross-fitting). The two halves' scores come from two
different functions on two scales, so they are never ranked together: each half's metrics are
computed within the half and the two are averaged. Baseline (Wen et al.): the mean guidance norm
over the first few sampling steps.

Any model goes through an adapter with ``eps_pair(x, t, prompts) -> (eps_null, eps_cond)``,
``abar`` (the cumulative alphas), ``shape`` and ``T``: our TinyUNet (prompts are class ids)
and a local Stable-Diffusion-style directory through diffusers (text prompts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from memaudit.errors import InputError
from memaudit.metrics import Estimate, membership_metrics, metric_name, roc_curve

from .config import ALIGNMENTS, AUTHORS_LOW_T, PAPER_WEIGHTS, WEIGHTS, check_choice
from .ddpm import (
    T,
    alphas_bar,
    ddim_step,
    ddim_timesteps,
    eps_pair,
    guide,
    mix,
    predict_x0,
)

FPR_BOUNDS = (0.01, 0.03)
ALIGNMENT_FEATURE = {"pure-noise": "alignment", "renoised-x0": "alignment_renoised_x0"}


class TinyAdapter:
    """Our class-conditional TinyUNet; prompts are class ids."""

    def __init__(self, unet):
        if not unet.config.classes:
            raise InputError(
                "this diffusion model is unconditional: guidance norms and noise-space detection "
                "need a "
                "class- or random-label-conditioned model (memaudit diffusion train --conditioning "
                "class)"
            )
        self.unet, self.T, self.abar = unet, T, alphas_bar()
        self.shape = (unet.config.channels, unet.config.size, unet.config.size)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        ids = []
        for p in prompts:
            if (
                not str(p).strip().lstrip("-").isdigit()
                or not 0 <= int(p) < self.unet.config.classes
            ):
                raise InputError(
                    f"prompt '{p}' is not a class id of this model "
                    f"(0..{self.unet.config.classes - 1})"
                )
            ids.append(int(p))
        return torch.as_tensor(ids)

    @torch.no_grad()
    def eps_pair(
        self, x: torch.Tensor, t: int, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return eps_pair(self.unet, x, torch.full((len(x),), t, dtype=torch.long), cond)


@dataclass(frozen=True)
class DetectSettings:
    noises: int = 4  # pure-noise draws per prompt; the features are their means
    low_t: float = AUTHORS_LOW_T  # the second call's timestep, as a share of T
    guidance: float = 3.0  # guidance weight of the baseline's sampling (and of renoised-x0's x0)
    wen_steps: int = 5  # baseline: guidance norms averaged over this many DDIM steps (of 50)
    alignment: str = "pure-noise"  # where the second call looks: one of ALIGNMENTS
    seed: int = 0

    def __post_init__(self):
        check_choice("alignment", self.alignment, ALIGNMENTS)


def low_timestep(low_t: float, T: int) -> int:
    """The second call's timestep: ``low_t * T`` rounded, at least 1 (41 for 0.041 of 1000)."""
    return max(1, round(low_t * T))


def features(
    adapter, prompts: list[str], settings: DetectSettings, *, batch_size: int = 64, progress=None
) -> dict[str, np.ndarray]:
    """Per prompt: noise_norm (N), the alignment (``alignment`` for the authors' A,
    ``alignment_renoised_x0`` for the earlier variant) and the Wen baseline, each averaged over
    ``noises`` draws.
    """
    cond = adapter.encode(prompts)
    gen = torch.Generator().manual_seed(settings.seed)
    a_name = ALIGNMENT_FEATURE[settings.alignment]
    out: dict[str, list[np.ndarray]] = {"noise_norm": [], a_name: [], "wen": []}
    for start in range(0, len(prompts), batch_size):
        c = cond[start : start + batch_size]
        c = c.repeat_interleave(settings.noises, 0)  # (B * noises, ...)
        x_T = torch.randn(len(c), *adapter.shape, generator=gen)
        feats = _two_pass(adapter, x_T, c, settings), _wen(adapter, x_T, c, settings)
        for name, v in [*feats[0].items(), ("wen", feats[1])]:
            out[name].append(v.reshape(-1, settings.noises).mean(1).cpu().numpy())
        if progress:
            progress("scoring prompts", min(start + batch_size, len(prompts)), len(prompts))
    return {k: np.concatenate(v) for k, v in out.items()}


def _two_pass(adapter, x_T, c, settings: DetectSettings) -> dict[str, torch.Tensor]:
    T, abar = adapter.T, adapter.abar
    eps_u, eps_c = adapter.eps_pair(x_T, T - 1, c)
    norm = (eps_c - eps_u).flatten(1).norm(dim=1)  # (B,)
    t_low = low_timestep(settings.low_t, T)
    if settings.alignment == "pure-noise":
        x_low = x_T  # the authors: the same pure noise, read at the low timestep
    else:  # renoised-x0: x0 predicted from the first call, noised again with the same noise
        x0 = predict_x0(x_T, guide(eps_u, eps_c, settings.guidance), abar[T - 1])
        x_low = mix(x0, x_T, abar[t_low])
    eu, ec = adapter.eps_pair(x_low, t_low, c)
    cos = torch.nn.functional.cosine_similarity(
        eu, ec - eu, dim=1, eps=1e-12
    )  # (B, H, W): over channels
    return {"noise_norm": norm, ALIGNMENT_FEATURE[settings.alignment]: cos.flatten(1).mean(1)}


def _wen(adapter, x, c, settings: DetectSettings) -> torch.Tensor:
    abar, ts, norms = adapter.abar, ddim_timesteps(50, adapter.T), []
    for i, t in enumerate(ts[: settings.wen_steps]):
        eps_u, eps_c = adapter.eps_pair(x, t, c)
        norms.append((eps_c - eps_u).flatten(1).norm(dim=1))
        x = ddim_step(x, guide(eps_u, eps_c, settings.guidance), abar[t], abar[ts[i + 1]])
    return torch.stack(norms).mean(0)


def alignment_key(feats: dict[str, np.ndarray]) -> str:
    """The alignment feature ``features`` computed: ``alignment`` or ``alignment_renoised_x0``."""
    (name,) = (k for k in ALIGNMENT_FEATURE.values() if k in feats)
    return name


def cross_fitted_score(
    feats: dict[str, np.ndarray], labels: np.ndarray, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """g1 * N + g2 * A with (g1, g2) fitted on the other half: no prompt is scored by weights
    fitted on it.

    Returns
    -------
    score : (prompts,) array
        Each half's score under the weights fitted on the other half; the two halves are on
        different scales, so rank them only within a half.
    halves : (prompts,) int array
        0 or 1: the half each prompt was scored in.
    weights : list of dict
        Per half: the g1, g2 it was scored with and how many prompts they were fitted on.
    """
    from sklearn.linear_model import LogisticRegression

    X = np.stack([feats["noise_norm"], feats[alignment_key(feats)]], 1)  # (prompts, 2)
    halves = _stratified_halves(labels, seed)
    score, weights = np.empty(len(labels)), []
    for k in (0, 1):
        fit, test = halves != k, halves == k
        if len(np.unique(labels[fit])) < 2:
            raise InputError(
                "each half of the prompts needs memorized and non-memorized ones; give at least 2 "
                "of each"
            )
        mu, sd = X[fit].mean(0), X[fit].std(0) + 1e-12
        clf = LogisticRegression().fit((X[fit] - mu) / sd, labels[fit])
        g = clf.coef_[0] / sd  # weights on the raw features
        score[test] = X[test] @ g
        weights.append(
            {"half": k + 1, "g1": float(g[0]), "g2": float(g[1]), "fitted_on": int(fit.sum())}
        )
    return score, halves, weights


def fixed_score(feats: dict[str, np.ndarray], weights: str) -> tuple[np.ndarray, list[dict]]:
    """g1 * N + g2 * A with the authors' fixed weights ``weights`` (a PAPER_WEIGHTS name)."""
    g1, g2 = PAPER_WEIGHTS[weights]
    return feats["noise_norm"] * g1 + feats[alignment_key(feats)] * g2, [
        {"g1": g1, "g2": g2, "source": f"{weights}: the authors' detect_eval.py"}
    ]


def _stratified_halves(labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=int)
    for y in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == y))
        folds[idx] = np.arange(len(idx)) % 2
    return folds


def _metrics(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUC, then TPR at each of FPR_BOUNDS."""
    fpr, tpr, _ = roc_curve(s, y)
    return np.array([np.trapezoid(tpr, fpr), *(tpr[fpr <= b + 1e-12].max() for b in FPR_BOUNDS)])


def per_half_metrics(
    score: np.ndarray,
    labels: np.ndarray,
    halves: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[dict[str, Estimate], list[dict[str, float]]]:
    """AUC and TPR at FPR_BOUNDS within each half, and their mean over the halves with a
    percentile bootstrap CI (each round resamples memorized and non-memorized prompts with
    replacement within each half, then averages the halves).

    Returns
    -------
    mean : dict
        Metric name -> the mean over the halves, with its CI.
    per_half : list of dict
        Per half: metric name -> value.
    """
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    names = ["auc", *(metric_name(b) for b in FPR_BOUNDS)]
    parts = [(score[halves == k], labels[halves == k]) for k in (0, 1)]
    point = np.array([_metrics(s, y) for s, y in parts])  # (2, metrics)
    rng = np.random.default_rng(seed)
    rounds = np.empty((n_bootstrap, len(names)))
    for b in range(n_bootstrap):
        per = []
        for s, y in parts:
            pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
            idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
            per.append(_metrics(s[idx], y[idx]))
        rounds[b] = np.mean(per, 0)
    alpha = (1 - level) / 2
    low, high = np.quantile(rounds, [alpha, 1 - alpha], axis=0)
    mean = {
        n: Estimate(float(v), float(lo), float(hi))
        for n, v, lo, hi in zip(names, point.mean(0), low, high)
    }
    return mean, [dict(zip(names, map(float, row))) for row in point]


@dataclass(frozen=True)
class Detection:
    """Every score's values and metrics, and how the combined score was made and measured."""

    scores: dict[str, np.ndarray]  # name -> (prompts,) score, higher = memorized
    metrics: dict[str, dict[str, dict[str, float]]]  # name -> metric -> value and CI (JSON)
    weights: list[dict]  # the combined score's g1, g2: per half when fitted, one pair when fixed
    halves: np.ndarray | None  # (prompts,) 0/1 half of each prompt when fitted, else None
    combined: dict  # the combined score's definition and per-half metrics (JSON)


def evaluate(
    feats: dict[str, np.ndarray],
    labels: np.ndarray,
    *,
    weights: str = "fitted",
    seed: int = 0,
    n_bootstrap: int = 1000,
) -> Detection:
    """AUC and TPR at 1% / 3% FPR, with bootstrap CIs, for N, A, the combined score and the
    baseline.

    With ``weights="fitted"`` the combined score's metrics are the mean of its two halves'
    (each half scored and ranked on its own); every other score, and the combined score with
    fixed weights, is one function of the features and is ranked over all prompts.
    """
    check_choice("weights", weights, WEIGHTS)
    a = alignment_key(feats)
    single = {"noise_norm": feats["noise_norm"], a: feats[a], "wen": feats["wen"]}
    metrics = {
        name: {
            k: v.to_dict()
            for k, v in membership_metrics(
                s, labels, n_bootstrap=n_bootstrap, seed=seed, fpr_bounds=FPR_BOUNDS
            ).items()
        }
        for name, s in single.items()
    }
    halves = None
    if weights == "fitted":
        combined, halves, used = cross_fitted_score(feats, labels, seed=seed)
        mean, per_half = per_half_metrics(
            combined, labels, halves, n_bootstrap=n_bootstrap, seed=seed
        )
        metrics["combined"] = {k: v.to_dict() for k, v in mean.items()}
        info = {
            "weights": "fitted",
            "evaluation": "per half, averaged: each half is ranked on its own, never pooled",
            "per_half": [
                {**m, "prompts": int((halves == k).sum())} for k, m in enumerate(per_half)
            ],
        }
    else:
        combined, used = fixed_score(feats, weights)
        metrics["combined"] = {
            k: v.to_dict()
            for k, v in membership_metrics(
                combined, labels, n_bootstrap=n_bootstrap, seed=seed, fpr_bounds=FPR_BOUNDS
            ).items()
        }
        info = {"weights": weights, "evaluation": "over all prompts (fixed weights)"}
    info["alignment_feature"] = a
    scores = {"combined": combined, **single}
    metrics = {"combined": metrics["combined"], **{k: metrics[k] for k in single}}
    return Detection(scores=scores, metrics=metrics, weights=used, halves=halves, combined=info)
