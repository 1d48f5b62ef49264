"""Dataset inference (Maini et al. 2024): was this *set* of texts trained on? A p-value, not an AUC.

Single-text membership signals are weak; many texts together are not. Per text we compute
a vector of membership features from the one scoring pass. The suspect set A and a set B
known not to be trained on are each split in halves; a linear classifier learns on A1 vs
B1 which combination of features separates them; a one-sided Welch t-test then asks
whether its scores on the held-out halves are higher for A2 than for B2. Fitting and
testing on disjoint halves is what makes the p-value valid: on two non-member sets it is
uniform. The split is repeated over seeds and the median p-value reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from memaudit.attacks import AttackInputs, parse_attacks
from memaudit.attacks.base import lowest_k_mean
from memaudit.attacks.views import score_views
from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.progress import Progress
from memaudit.io.rundir import Timings
from memaudit.models.hf import LoadOptions
from memaudit.models.sources import FILES, Sources
from memaudit.scoring.cache import resolve_cache_root
from memaudit.scoring.engine import ScoreSettings

from .config import DatasetInferenceConfig
from .sets import prepare_sets

MIN_TEXTS = 10  # per set: each half needs enough texts to fit on and to test
K_VALUES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def features(inputs: AttackInputs) -> tuple[np.ndarray, list[str]]:
    """(N, F) feature matrix: loss, zlib, min_k and max_k at several k, lowercase, reference
    when given.
    """
    specs = ["loss", "zlib"] + [f"min_k:k={k:g}" for k in K_VALUES]
    if inputs.lowercase is not None:
        specs.append("lowercase")
    if inputs.reference is not None:
        specs.append("reference")
    columns = {s.column: s(inputs) for s in parse_attacks(",".join(specs))}
    for k in K_VALUES:  # max_k: mean of the k% most likely tokens
        columns[f"max_k:k={k:g}"] = np.array([-lowest_k_mean(-t.logp, k) for t in inputs.target])
    names = list(columns)
    return np.column_stack([columns[n] for n in names]), names


@dataclass(frozen=True)
class SplitResult:
    p_value: float
    t_statistic: float
    weights: np.ndarray  # the classifier's coefficients on standardized features


def one_split(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> SplitResult:
    """Fit on half of A vs half of B, t-test the other halves. Higher score = more like A."""
    from scipy.stats import ttest_ind
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ia, ib = rng.permutation(len(a)), rng.permutation(len(b))
    a1, a2 = a[ia[: len(a) // 2]], a[ia[len(a) // 2 :]]
    b1, b2 = b[ib[: len(b) // 2]], b[ib[len(b) // 2 :]]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    model.fit(np.vstack([a1, b1]), np.r_[np.ones(len(a1)), np.zeros(len(b1))])
    sa, sb = model.decision_function(a2), model.decision_function(b2)
    test = ttest_ind(sa, sb, equal_var=False, alternative="greater")
    p = float(test.pvalue) if np.isfinite(test.pvalue) else 1.0  # constant scores: no evidence
    return SplitResult(p, float(test.statistic), model[-1].coef_[0].copy())


OUTLIER_FRAC = 0.05  # as in Maini et al.'s code: the 2.5% extremes of each feature are clipped


def clip_outliers(x: np.ndarray, frac: float = OUTLIER_FRAC) -> np.ndarray:
    """Each column's ``frac / 2`` lowest and highest values clipped, as in the reference code.

    With ``k = int(n * frac / 2)`` values on each side, the column is clipped to its k-th
    smallest and k-th largest values (so nothing changes while ``n * frac / 2 < 2``).

    >>> x = np.arange(100.0)[:, None]  # (100, 1); k = 2
    >>> x[-1] = 1e6
    >>> float(clip_outliers(x).max())
    98.0
    """
    n = len(x)
    k = int(n * frac / 2)
    if k < 1:
        return x.copy()
    ordered = np.sort(x, axis=0)
    return np.clip(x, ordered[k - 1], ordered[n - k])


def combine_p_values(p: Sequence[float]) -> float:
    """One valid p-value from the splits' p-values: twice their median, at most 1.

    The splits reuse the same texts, so their p-values are dependent; the median of
    dependent p-values is not a p-value (under the null it falls below alpha more often than
    alpha). Twice the median is valid under any dependence (Meinshausen, Meier and Buhlmann
    2009, quantile aggregation with gamma = 1/2).

    >>> combine_p_values([0.01, 0.02, 0.6])
    0.04
    """
    return float(min(1.0, 2 * np.median(p)))


def infer(a: np.ndarray, b: np.ndarray, *, n_splits: int = 10, seed: int = 0) -> dict:
    """A valid p-value, from ``n_splits`` seeded splits, that A was trained on (B was not).

    Features are first clipped at their 2.5% extremes within each set (``clip_outliers``);
    the splits' p-values are combined by ``combine_p_values``.

    Raises
    ------
    InputError
        Fewer than ``MIN_TEXTS`` texts in either set.
    """
    for name, x in (("suspect", a), ("validation", b)):
        if len(x) < MIN_TEXTS:
            raise InputError(
                f"the {name} set has {len(x)} texts; dataset inference needs at least {MIN_TEXTS} "
                "in each set"
            )
    for name, x in (("suspect", a), ("validation", b)):
        if not np.isfinite(x).all():
            raise InputError(
                f"membership features are undefined for {int((~np.isfinite(x)).any(axis=1).sum())} "
                f"{name} texts"
            )
    rng = np.random.default_rng(seed)
    a, b = clip_outliers(a), clip_outliers(b)
    splits = [one_split(a, b, rng) for _ in range(n_splits)]
    p_values = [s.p_value for s in splits]
    return {
        "p_value": combine_p_values(p_values),
        "combination": "twice the median of the split p-values (Meinshausen et al. 2009)",
        "median_split_p_value": float(np.median(p_values)),
        "split_p_values": p_values,
        "t_statistics": [s.t_statistic for s in splits],
        "mean_weights": np.mean([s.weights for s in splits], axis=0).tolist(),
    }


def p_value_curve(
    a: np.ndarray, b: np.ndarray, sizes, *, n_splits: int = 10, seed: int = 0
) -> list[dict]:
    """p-value against the number of suspect texts used (B kept whole): how many texts are
    needed.
    """
    rng = np.random.default_rng(seed + 1)
    out = []
    for n in sizes:
        pick = rng.choice(len(a), n, replace=False)
        out.append(
            {
                "n_suspect": int(n),
                "p_value": infer(a[pick], b, n_splits=n_splits, seed=seed)["p_value"],
            }
        )
    return out


def curve_sizes(n: int) -> list[int]:
    """About 8 sizes from MIN_TEXTS to n, spaced evenly on a log scale."""
    if n <= MIN_TEXTS:
        return [n]
    return sorted({int(round(x)) for x in np.geomspace(MIN_TEXTS, n, num=8)})


def false_positive_check(
    b: np.ndarray, *, repeats: int = 50, n_splits: int = 10, seed: int = 0
) -> dict:
    """Dataset inference between two random halves of the validation set, ``repeats`` times.

    Both halves are non-members, so the p-values should be roughly uniform and the share
    below alpha about alpha.
    """
    if len(b) < 2 * MIN_TEXTS:
        raise InputError(
            f"the validation set has {len(b)} texts; the false-positive check needs at least "
            f"{2 * MIN_TEXTS}"
        )
    rng = np.random.default_rng(seed)
    p_values = []
    for r in range(repeats):
        idx = rng.permutation(len(b))
        half = len(b) // 2
        p_values.append(
            infer(b[idx[:half]], b[idx[half:]], n_splits=n_splits, seed=seed + 1 + r)["p_value"]
        )
    return {"p_values": p_values}


def run_dataset_inference(
    config: DatasetInferenceConfig, *, progress: Progress | None = None, sources: Sources = FILES
) -> dict:
    """``memaudit dataset-inference``: score both sets once, test, and write the run dir.

    ``sources``: the texts and models the API was given by name (the command line: files).
    """
    timings = Timings()
    with timings("prepare"):
        sets = prepare_sets(
            config.suspect,
            config.validation,
            model=config.model,
            reference=config.reference,
            options=LoadOptions(
                dtype=config.dtype,
                device=config.device,
                trust_remote_code=config.trust_remote_code,
                device_map=config.device_map,
                bos=config.bos,
            ),
            adapter=config.adapter,
            skip_invalid=config.skip_invalid,
            names=("suspect texts", "validation texts"),
            max_tokens=config.max_tokens_per_text,
            sources=sources,
        )
    run = rs.RunDir.begin(config.out, "dataset-inference", config)
    with timings("scoring"):
        views, stats = score_views(
            sets.target,
            sets.reference,
            [r.text for r in sets.records],
            ScoreSettings(),
            lowercase=True,
            cache_root=resolve_cache_root(config.cache_dir, config.no_cache),
            token_ids=(sets.target_ids, sets.reference_ids),
            progress=progress,
        )
        x, names = features(views)
    is_suspect = np.array([r.label == 1 for r in sets.records])
    a, b = x[is_suspect], x[~is_suspect]
    with timings("inference"):
        result = infer(a, b, n_splits=config.n_splits, seed=config.seed)
        curve = p_value_curve(a, b, curve_sizes(len(a)), n_splits=config.n_splits, seed=config.seed)
        check = None
        if config.false_positive_check:
            check = false_positive_check(
                b, repeats=config.fp_repeats, n_splits=config.n_splits, seed=config.seed
            )
            check["share_below_alpha"] = float(np.mean(np.array(check["p_values"]) < config.alpha))

    columns = {
        "id": [r.id for r in sets.records],
        "set": ["suspect" if s else "validation" for s in is_suspect],
        "source": [r.where for r in sets.records],
        **{n: x[:, j].tolist() for j, n in enumerate(names)},
    }
    run.write_scores(columns)
    results = {
        **run.header({"target": sets.target, "reference": sets.reference}),
        "data": {
            "suspect": {"path": config.suspect, "n": int(is_suspect.sum())},
            "validation": {"path": config.validation, "n": int((~is_suspect).sum())},
            "skipped": [s.to_dict() for s in sets.skipped],
            "max_tokens_per_text": config.max_tokens_per_text or None,
            "texts_cut": sets.texts_cut,
        },
        "features": names,
        "p_value": result["p_value"],
        "trained_on": result["p_value"] < config.alpha,
        "verdict": _verdict(result["p_value"], config.alpha),
        "splits": result,
        "p_value_curve": curve,
        "false_positive_check": check,
        "scoring": {m: s.__dict__ for m, s in stats.items()},
        "timings_s": timings.seconds,
        "warnings": sets.warnings,
    }
    render = None
    if config.report:
        from memaudit.report import write_dataset_inference_report

        render = write_dataset_inference_report
    run.finish(results, render)
    return results


def _verdict(p: float, alpha: float) -> str:
    if p < alpha:
        return f"the suspect set was trained on (p = {p:.3g} < alpha = {alpha:g})"
    return f"no evidence that the suspect set was trained on (p = {p:.3g} >= alpha = {alpha:g})"
