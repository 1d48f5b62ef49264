"""Attacks that need only the target model's scores of the texts themselves."""

from __future__ import annotations

import zlib as _zlib

import numpy as np

from .base import AttackInputs, lowest_k_mean, mean_logp, per_text, register


@register("loss", description="mean token log-likelihood, -NLL (Yeom et al. 2018)")
def loss(inputs: AttackInputs) -> np.ndarray:
    return mean_logp(inputs.target)


@register(
    "zlib",
    description=(
        "mean log-likelihood divided by the zlib-compressed length in bytes (Carlini et al. 2021)"
    ),
)
def zlib(inputs: AttackInputs) -> np.ndarray:
    sizes = np.array(
        [len(_zlib.compress(t.encode("utf-8"))) for t in inputs.texts], dtype=np.float64
    )
    return mean_logp(inputs.target) / sizes


@register(
    "min_k",
    description="mean log-likelihood of the k% least likely tokens (Shi et al. 2024)",
    k=0.2,
)
def min_k(inputs: AttackInputs, *, k: float) -> np.ndarray:
    return np.array([lowest_k_mean(v, k) for v in per_text(inputs.target, "logp")])


@register(
    "min_k_pp",
    description=(
        "Min-K% over token log-likelihoods standardized by the next-token distribution "
        "(Zhang et al. 2024)"
    ),
    k=0.2,
)
def min_k_pp(inputs: AttackInputs, *, k: float) -> np.ndarray:
    out = []
    for t in inputs.target:
        # sigma is 0 only for a one-hot distribution; the floor keeps z finite there
        z = (t.logp.astype(np.float64) - t.mu) / np.maximum(t.sigma, 1e-6)
        out.append(lowest_k_mean(z, k))
    return np.array(out)
