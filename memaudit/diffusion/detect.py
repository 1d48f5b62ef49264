"""Noise-space memorization detection: which prompts (or classes) make a model reproduce training
images?

From pure noise x_T, one call gives the guidance norm ``N = ||eps(x_T, c) - eps(x_T, null)||``;
a second call at a low-noise timestep, on x0 predicted from the first call and noised again
with the same noise, gives the alignment ``A = mean over pixels of cos(eps_null, eps_c - eps_null)``
(cosine over channels at each pixel; for one-channel images that is the sign agreement).
The combined score ``g1 * N + g2 * A`` uses weights fitted by logistic regression on the other
half of the prompts only (two-fold cross-fitting), never on the prompts it scores. Baseline
(Wen et al.): the mean guidance norm over the first few sampling steps.

Any model goes through an adapter with ``eps_pair(x, t, prompts) -> (eps_null, eps_cond)``,
``abar`` (the cumulative alphas), ``shape`` and ``T``: our TinyUNet (prompts are class ids)
and a local Stable-Diffusion-style directory through diffusers (text prompts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from memaudit.errors import InputError
from memaudit.metrics import membership_metrics

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
    low_t: float = 0.1  # the second call's timestep, as a share of T
    guidance: float = 3.0  # guidance weight of x0's prediction and of the baseline's sampling
    wen_steps: int = 5  # baseline: guidance norms averaged over this many DDIM steps (of 50)
    seed: int = 0


def features(
    adapter, prompts: list[str], settings: DetectSettings, *, batch_size: int = 64, progress=None
) -> dict[str, np.ndarray]:
    """Per prompt: noise_norm (N), alignment (A) and the Wen baseline, each averaged over
    ``noises`` draws.
    """
    cond = adapter.encode(prompts)
    gen = torch.Generator().manual_seed(settings.seed)
    out: dict[str, list[np.ndarray]] = {"noise_norm": [], "alignment": [], "wen": []}
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
    x0 = predict_x0(x_T, guide(eps_u, eps_c, settings.guidance), abar[T - 1])
    t_low = max(1, int(settings.low_t * T))
    x_low = mix(x0, x_T, abar[t_low])  # the same noise, at low noise
    eu, ec = adapter.eps_pair(x_low, t_low, c)
    cos = torch.nn.functional.cosine_similarity(
        eu, ec - eu, dim=1, eps=1e-12
    )  # (B, H, W): over channels
    return {"noise_norm": norm, "alignment": cos.flatten(1).mean(1)}


def _wen(adapter, x, c, settings: DetectSettings) -> torch.Tensor:
    abar, ts, norms = adapter.abar, ddim_timesteps(50, adapter.T), []
    for i, t in enumerate(ts[: settings.wen_steps]):
        eps_u, eps_c = adapter.eps_pair(x, t, c)
        norms.append((eps_c - eps_u).flatten(1).norm(dim=1))
        x = ddim_step(x, guide(eps_u, eps_c, settings.guidance), abar[t], abar[ts[i + 1]])
    return torch.stack(norms).mean(0)


def cross_fitted_score(
    feats: dict[str, np.ndarray], labels: np.ndarray, *, seed: int = 0
) -> tuple[np.ndarray, list[dict]]:
    """g1 * N + g2 * A with (g1, g2) fitted on the other fold: no prompt is scored by weights
    fitted on it.
    """
    from sklearn.linear_model import LogisticRegression

    X = np.stack([feats["noise_norm"], feats["alignment"]], 1)
    folds = _stratified_halves(labels, seed)
    score, weights = np.empty(len(labels)), []
    for k in (0, 1):
        fit, test = folds != k, folds == k
        if len(np.unique(labels[fit])) < 2:
            raise InputError(
                "each half of the prompts needs memorized and non-memorized ones; give at least 2 "
                "of each"
            )
        mu, sd = X[fit].mean(0), X[fit].std(0) + 1e-12
        clf = LogisticRegression().fit((X[fit] - mu) / sd, labels[fit])
        g = clf.coef_[0] / sd  # weights on the raw features
        score[test] = X[test] @ g
        weights.append({"g1": float(g[0]), "g2": float(g[1]), "fitted_on": int(fit.sum())})
    return score, weights


def _stratified_halves(labels: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=int)
    for y in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == y))
        folds[idx] = np.arange(len(idx)) % 2
    return folds


@dataclass(frozen=True)
class Detection:
    """Every score's values and metrics, and the weights of the combined score."""

    scores: dict[str, np.ndarray]  # name -> (prompts,) score, higher = memorized
    metrics: dict[str, dict[str, dict[str, float]]]  # name -> metric -> value and CI (JSON)
    weights: list[dict[str, float]]  # per fold: the combined score's fitted g1, g2 (JSON)


def evaluate(
    feats: dict[str, np.ndarray], labels: np.ndarray, *, seed: int = 0, n_bootstrap: int = 1000
) -> Detection:
    """AUC and TPR at 1% / 3% FPR, with bootstrap CIs, for N, A, the combined score and the
    baseline.
    """
    combined, weights = cross_fitted_score(feats, labels, seed=seed)
    scores = {
        "combined": combined,
        "noise_norm": feats["noise_norm"],
        "alignment": feats["alignment"],
        "wen": feats["wen"],
    }
    metrics = {
        name: {
            k: v.to_dict()
            for k, v in membership_metrics(
                s, labels, n_bootstrap=n_bootstrap, seed=seed, fpr_bounds=FPR_BOUNDS
            ).items()
        }
        for name, s in scores.items()
    }
    return Detection(scores=scores, metrics=metrics, weights=weights)
