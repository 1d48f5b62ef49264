"""ROC AUC, TPR at low FPR, and seeded bootstrap confidence intervals.

Scores follow the package convention: higher = more likely a member (label 1).

Undefined scores: a NaN score ranks as the least member-like, tied with -inf and with every
other NaN (so it counts one half against another NaN or a -inf, and loses to every finite
score); +inf scores tie with each other. The result never depends on the order of the
inputs, and equals scikit-learn's ``roc_auc_score`` on the same scores with NaN mapped to a
value below every finite score (scikit-learn itself refuses NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

FPR_BOUNDS = (0.01, 0.001)


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points at every distinct score threshold, starting at (0, 0).

    Returns
    -------
    fpr, tpr, thresholds : arrays
        A point ``i`` counts as positive every example with score >= ``thresholds[i]``.
    """
    s, y = _validate(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # tie boundaries by inequality, not by difference: inf - inf is NaN, which would split a tie
    last_of_tie = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (len(y) - y.sum())]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (ties count one half), equal to scikit-learn's ``roc_auc_score``.

    Examples
    --------
    >>> roc_auc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0])
    0.75
    """
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.trapezoid(tpr, fpr))


def tpr_at_fpr(scores: ArrayLike, labels: ArrayLike, max_fpr: float) -> float:
    """Largest TPR among ROC points whose FPR is at most ``max_fpr``."""
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


@dataclass(frozen=True)
class Estimate:
    """A value with a bootstrap confidence interval."""

    value: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}


def membership_metrics(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    fpr_bounds: tuple[float, ...] = FPR_BOUNDS,
) -> dict[str, Estimate]:
    """AUC and TPR at each FPR bound, each with a percentile bootstrap CI.

    The bootstrap resamples members and non-members separately, with replacement, so
    every round holds both classes in their original numbers.

    Examples
    --------
    >>> m = membership_metrics([3, 2, 1, 0], [1, 1, 0, 0], n_bootstrap=100)
    >>> m["auc"].value, m["tpr@1%fpr"].value
    (1.0, 1.0)
    """
    s, y = _validate(scores, labels)
    if n_bootstrap < 1:  # zero rounds would give a zero-width interval that looks real
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    point = _all_metrics(s, y, fpr_bounds)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rounds = np.empty((n_bootstrap, len(point)))
    for b in range(n_bootstrap):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        rounds[b] = list(_all_metrics(s[idx], y[idx], fpr_bounds).values())
    alpha = (1 - level) / 2
    low, high = (
        np.quantile(rounds, [alpha, 1 - alpha], axis=0)
        if n_bootstrap
        else (point.values(), point.values())
    )
    return {
        k: Estimate(v, float(lo), float(hi)) for (k, v), lo, hi in zip(point.items(), low, high)
    }


def metric_name(max_fpr: float) -> str:
    return f"tpr@{max_fpr * 100:g}%fpr"


def _all_metrics(
    s: np.ndarray, y: np.ndarray, fpr_bounds: tuple[float, ...] = FPR_BOUNDS
) -> dict[str, float]:
    fpr, tpr, _ = roc_curve(s, y)
    out = {"auc": float(np.trapezoid(tpr, fpr))}
    for bound in fpr_bounds:
        out[metric_name(bound)] = float(tpr[fpr <= bound + 1e-12].max())
    return out


def _validate(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be 1-d and the same length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    y = y.astype(np.int64)
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("need both members (1) and non-members (0)")
    # NaN (an undefined score) ranks as least member-like
    return np.where(np.isnan(s), -np.inf, s), y


def supported_fpr(bound: float, negatives: int) -> bool:
    """Whether ``negatives`` non-members can show an FPR as small as ``bound``: one false
    positive must be at most ``bound`` (1% needs 100 non-members, 0.1% needs 1,000).

    >>> supported_fpr(0.01, 100), supported_fpr(0.001, 999)
    (True, False)
    """
    return negatives > 0 and 1 / negatives <= bound + 1e-12


def mark_supported(
    metrics: dict[str, dict], negatives: int, fpr_bounds: tuple[float, ...] = FPR_BOUNDS
) -> dict[str, dict]:
    """``metrics`` (``Estimate.to_dict()`` by key) with ``supported`` on each TPR@FPR entry;
    where it is False the value is the TPR at zero false positives, not at the bound.
    """
    out = dict(metrics)
    for bound in fpr_bounds:
        key = metric_name(bound)
        if key in out:
            out[key] = {**out[key], "supported": supported_fpr(bound, negatives)}
    return out


def zero_fp_notes(
    negatives: int,
    fpr_bounds: tuple[float, ...] = FPR_BOUNDS,
    *,
    what: str = "non-members",
    shown_as_na: bool = False,
) -> list[str]:
    """A note for each FPR bound below 1/``negatives``: there, TPR is the TPR at zero false
    positives, and the report must say so next to the number (or, with ``shown_as_na``, that
    it shows n/a and results.json keeps the zero-false-positive TPR, marked unsupported).

    >>> len(zero_fp_notes(50)), len(zero_fp_notes(500)), len(zero_fp_notes(5000))
    (2, 1, 0)
    >>> zero_fp_notes(500)[0][:37]
    'only 500 non-members: TPR at 0.1% FPR'
    """
    said = (
        "is shown as n/a (results.json keeps the TPR at zero false positives, "
        "marked supported: false)"
        if shown_as_na
        else "is the TPR at zero false positives"
    )
    return [
        f"only {negatives} {what}: TPR at {bound * 100:g}% FPR {said}; "
        f"one false positive is already {100 / negatives:.2g}% FPR"
        for bound in fpr_bounds
        if negatives and not supported_fpr(bound, negatives)
    ]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def cluster_bootstrap_mean(
    values: ArrayLike, clusters: ArrayLike, *, n_bootstrap: int = 1000, seed: int = 0
) -> Estimate:
    """Mean of ``values`` with a 95% percentile CI that resamples whole clusters.

    Several samples drawn from one prompt are not independent observations: resampling
    them one by one would make the interval too narrow. Each round draws as many clusters
    as there are, with replacement, and takes the mean over all their values.

    Examples
    --------
    >>> e = cluster_bootstrap_mean([1.0, 1.0, 0.0, 0.0], [0, 0, 1, 1], n_bootstrap=200)
    >>> e.value, 0.0 <= e.ci_low <= e.ci_high <= 1.0
    (0.5, True)
    """
    v = np.asarray(values, dtype=float)
    c = np.asarray(clusters)
    if v.shape != c.shape or v.ndim != 1 or len(v) == 0:
        raise ValueError("values and clusters must be equal-length, non-empty 1-d arrays")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    _, index = np.unique(c, return_inverse=True)
    sums = np.bincount(index, weights=v)  # per cluster
    sizes = np.bincount(index).astype(float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(n_bootstrap, len(sums)))
    rounds = sums[picks].sum(axis=1) / sizes[picks].sum(axis=1)
    low, high = np.percentile(rounds, [2.5, 97.5])
    return Estimate(float(v.mean()), float(low), float(high))


def bootstrap_difference(
    a: ArrayLike, b: ArrayLike, *, n_bootstrap: int = 1000, seed: int = 0
) -> Estimate:
    """``mean(a) - mean(b)`` of two independent samples, with a 95% percentile CI that
    resamples each sample on its own (both keep their sizes in every round).

    Examples
    --------
    >>> e = bootstrap_difference([1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0], n_bootstrap=200)
    >>> e.value, e.ci_low <= e.value <= e.ci_high
    (0.5, True)
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim != 1 or y.ndim != 1 or not len(x) or not len(y):
        raise ValueError("both samples must be non-empty 1-d arrays")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    rng = np.random.default_rng(seed)
    rounds = x[rng.integers(0, len(x), (n_bootstrap, len(x)))].mean(axis=1) - y[
        rng.integers(0, len(y), (n_bootstrap, len(y)))
    ].mean(axis=1)
    low, high = np.percentile(rounds, [2.5, 97.5])
    return Estimate(float(x.mean() - y.mean()), float(low), float(high))
