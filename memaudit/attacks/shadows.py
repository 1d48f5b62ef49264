"""Attacks calibrated by shadow models: LiRA (online and offline) and RMIA.

A shadows dir (``memaudit shadows train``) holds N models, each trained on a seeded half of a
text pool so that every pool text is in exactly half of them, and the membership matrix. The
``shadows`` view scores every target text once under every shadow and says, per text and
shadow, whether the text was in that shadow's half. A text is matched to the pool by its exact
text; a text not in the pool was in no shadow's half, so it counts as OUT for all of them.

The statistic of a text under a model is its mean token log-likelihood (minus the LM loss,
what LiRA's language-model experiments use per example); ``exp`` of it, the geometric-mean
token probability, is RMIA's ``p(x | theta)``. Definitions and papers: docs/mia.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import expit
from scipy.stats import norm

from memaudit.errors import InputError
from memaudit.io.texts import read_texts
from memaudit.models.hf import LoadOptions, load_causal_lm, tokenizer_fingerprint
from memaudit.scoring.engine import ScoreStats, score_texts

from .base import AttackInputs, PerText, mean_logp, register, register_view

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .views import ViewContext

# the layout of a shadows dir, written by memaudit.mia.shadows
POOL = "pool.jsonl"
MEMBERSHIP = "membership.npz"  # "membership": (shadows, pool texts) bool
RECORD = "shadows.json"  # written last: its presence means every shadow finished
MIN_STD = 1e-6  # keeps a Gaussian fit of identical scores finite


def model_name(i: int) -> str:
    return f"model-{i}"


@dataclass(frozen=True)
class ShadowSet:
    """A finished shadows dir, read and checked against the target's tokenizer."""

    path: Path
    models: list[Path]
    membership: np.ndarray  # (S, P) bool
    column: dict[str, int]  # pool text -> its column in membership

    def member(self, texts: list[str]) -> np.ndarray:
        """(N, S) bool: whether each text was in each shadow's half (not in the pool: never)."""
        out = np.zeros((len(texts), len(self.models)), dtype=bool)
        for row, text in enumerate(texts):
            col = self.column.get(text)
            if col is not None:
                out[row] = self.membership[:, col]
        return out


def read_shadows(path: str | Path, *, tokenizer: str) -> ShadowSet:
    """Read a shadows dir; every shadow must share the target's tokenizer ``tokenizer``.

    Raises
    ------
    InputError
        Not a finished shadows dir, an inconsistent membership matrix, or a shadow with
        another tokenizer than the target's.
    """
    p = Path(path)
    if not (p / RECORD).is_file():
        raise InputError(
            f"not a finished shadows dir (no {RECORD}); make one with `memaudit shadows train`",
            path=str(p),
        )
    record = json.loads((p / RECORD).read_text())
    models = [p / s["dir"] for s in record["shadows"]]
    with np.load(p / MEMBERSHIP, allow_pickle=False) as f:
        membership = f["membership"].astype(bool)
    pool = [r.text for r in read_texts(p / POOL).records]
    if membership.shape != (len(models), len(pool)):
        raise InputError(
            f"{MEMBERSHIP} is {membership.shape}, expected ({len(models)}, {len(pool)})",
            path=str(p / MEMBERSHIP),
        )
    for m in models:
        theirs = tokenizer_fingerprint(m)
        if theirs != tokenizer:
            raise InputError(
                f"this shadow's tokenizer ({theirs}) is not the target's ({tokenizer}); train "
                "the shadows with --tokenizer TARGET_DIR",
                path=str(m),
            )
    return ShadowSet(p, models, membership, {t: i for i, t in enumerate(pool)})


def _score_under_shadows(
    ctx: ViewContext,
    shadows: ShadowSet,
    texts: list[str],
    token_ids: Sequence[Sequence[int]] | None = None,
) -> tuple[np.ndarray, dict[str, ScoreStats]]:
    """(N, S) mean log-likelihoods, one pass per text per shadow (cached), and the stats."""
    options = LoadOptions(
        dtype=ctx.option("dtype"),
        device=ctx.option("device"),
        trust_remote_code=ctx.option("trust_remote_code"),
        bos=ctx.option("bos"),  # the target's token ids, so the shadows' cache key
    )
    columns, stats = [], {}
    for i, path in enumerate(shadows.models):
        model = load_causal_lm(path, options)  # one at a time: N large models need not fit
        scores, stats[model_name(i)] = score_texts(
            model,
            texts,
            ctx.settings,
            cache_root=ctx.cache_root,
            token_ids=token_ids,
            progress=ctx.progress,
            stage=f"scoring shadow {i + 1}/{len(shadows.models)}",
        )
        columns.append(mean_logp(scores))
        del model
    return np.stack(columns, axis=1), stats  # (N, S)


def _prepare_shadows(ctx: ViewContext) -> ShadowSet:
    return read_shadows(ctx.option("shadows"), tokenizer=ctx.target.tokenizer_fingerprint)


@register_view(
    "shadows",
    description="each shadow model's mean log-likelihood of each text, and whether it was IN",
    cost="+1 pass per text per shadow model",
    requires=("shadows",),
    prepare=_prepare_shadows,
)
def shadows_view(ctx: ViewContext, shadows: ShadowSet) -> tuple[PerText, dict[str, ScoreStats]]:
    scores, stats = _score_under_shadows(ctx, shadows, ctx.texts, ctx.token_ids)
    return PerText(scores=scores, member=shadows.member(ctx.texts)), stats


@dataclass(frozen=True)
class Population:
    """RMIA's population texts z under the target and the shadows; the same for every text."""

    target: np.ndarray  # (Z,) mean log-likelihood under the target
    shadows: np.ndarray  # (Z, S) under each shadow
    member: np.ndarray  # (Z, S) whether z was in each shadow's half

    def subset(self, indices: Iterable[int]) -> Population:
        return self  # not per text: every text is compared with the whole population


def _prepare_population(ctx: ViewContext) -> tuple[ShadowSet, list[str]]:
    texts = [r.text for r in read_texts(ctx.option("population")).records]
    return _prepare_shadows(ctx), texts


@register_view(
    "shadow_population",
    description="rmia's population texts under the target and every shadow",
    cost="+1 target pass and +1 pass per shadow per population text (once per run)",
    requires=("shadows", "population"),
    prepare=_prepare_population,
)
def population_view(
    ctx: ViewContext, state: tuple[ShadowSet, list[str]]
) -> tuple[Population, dict[str, ScoreStats]]:
    shadows, texts = state
    target, target_stats = score_texts(
        ctx.target,
        texts,
        ctx.settings,
        cache_root=ctx.cache_root,
        progress=ctx.progress,
        stage="scoring population",
    )
    scores, stats = _score_under_shadows(ctx, shadows, texts)
    return Population(mean_logp(target), scores, shadows.member(texts)), {
        "target": target_stats,
        **stats,
    }


# ---- Gaussian fits ---------------------------------------------------------------------------


def gaussian_fit(
    scores: np.ndarray, mask: np.ndarray, *, fixed_variance: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-text mean and standard deviation of the scores where ``mask`` holds.

    ``scores``, ``mask``: (N, S). A text with no masked score gets mean NaN. The standard
    deviation is the text's own (ddof 1) or, with ``fixed_variance`` or fewer than two scores,
    the global one: the pooled within-text deviation over all texts (LiRA's fixed variance),
    or, where no text has two scores, the deviation of all masked scores together.
    """
    n = mask.sum(axis=1)  # (N,)
    total = np.where(mask, scores, 0.0).sum(axis=1)
    mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    sq = np.where(mask, (scores - np.nan_to_num(mean)[:, None]) ** 2, 0.0).sum(axis=1)
    dof = np.maximum(n - 1, 0)
    if dof.sum() > 0:
        global_std = np.sqrt(sq.sum() / dof.sum())
    else:
        global_std = float(np.std(scores[mask])) if mask.any() else 0.0
    own = np.sqrt(sq / np.maximum(dof, 1))
    std = np.where(fixed_variance | (dof < 1), global_std, own)
    return mean, np.maximum(std, MIN_STD)


def _shadow_inputs(inputs: AttackInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    view = inputs.view("shadows")
    return mean_logp(inputs.target), view["scores"], view["member"]


def first_k(mask: np.ndarray, k: float) -> np.ndarray:
    """``mask`` (N, S) keeping, per text, only its first ``k`` True entries (``k = 0``: all).

    The ``models`` parameter: with ``models=2`` each text is judged by 2 IN and 2 OUT shadows
    (the first ones in the dir's order), as a study with 2 reference models per text would be.

    >>> first_k(np.array([[True, False, True, True]]), 2).astype(int).tolist()
    [[1, 0, 1, 0]]
    """
    if k == 0:
        return mask
    return mask & (np.cumsum(mask, axis=1) <= k)


@register(
    "lira",
    description=(
        "LiRA online: log-likelihood ratio of the target's score under Gaussians fitted to "
        "the IN and OUT shadows' scores of the text (Carlini et al. 2022)"
    ),
    needs=("shadows",),
    cost="+1 pass per text per shadow model (the shadows view)",
    fixed_variance=1.0,
    models=0.0,
)
def lira(inputs: AttackInputs, *, fixed_variance: float, models: float) -> np.ndarray:
    s, scores, member = _shadow_inputs(inputs)
    fixed = bool(fixed_variance)
    mu_in, sd_in = gaussian_fit(scores, first_k(member, models), fixed_variance=fixed)
    mu_out, sd_out = gaussian_fit(scores, first_k(~member, models), fixed_variance=fixed)
    has_in = ~np.isnan(mu_in)
    if not has_in.any():  # no text in the pool: nothing to fit IN on, only the offline test
        return (s - mu_out) / sd_out
    # a text outside the pool has no IN scores: its IN mean is its OUT mean shifted by the
    # mean IN - OUT gap of the texts that have both
    gap = float(np.mean(mu_in[has_in] - mu_out[has_in]))
    mu_in = np.where(has_in, mu_in, mu_out + gap)
    return norm.logpdf(s, mu_in, sd_in) - norm.logpdf(s, mu_out, sd_out)


@register(
    "lira_offline",
    description=(
        "LiRA offline: one-sided test of the target's score against a Gaussian fitted to the "
        "OUT shadows' scores, as the z-score (Carlini et al. 2022)"
    ),
    needs=("shadows",),
    cost="+1 pass per text per shadow model (the shadows view; only OUT ones are used)",
    fixed_variance=1.0,
    models=0.0,
)
def lira_offline(inputs: AttackInputs, *, fixed_variance: float, models: float) -> np.ndarray:
    s, scores, member = _shadow_inputs(inputs)
    out = first_k(~member, models)
    mu_out, sd_out = gaussian_fit(scores, out, fixed_variance=bool(fixed_variance))
    # the paper's score is Phi(z); z ranks the same and does not saturate at 1.0
    return (s - mu_out) / sd_out


def rmia_log_ratio(
    target: np.ndarray,
    shadows: np.ndarray,
    member: np.ndarray,
    *,
    a: float,
    online: bool,
    models: float = 0,
) -> np.ndarray:
    """log p(x | theta) / p(x) per text: ``target`` (N,), ``shadows`` and ``member`` (N, S).

    p(. | theta) is exp of the mean token log-likelihood. p(x) is its mean over all shadows
    (online), or over the OUT shadows, scaled as ``((1 + a) p_OUT + (1 - a)) / 2`` (offline);
    with ``models = k`` over each text's first k IN and first k OUT shadows only.
    """
    p = np.exp(shadows)  # (N, S)
    if online:
        used = first_k(member, models) | first_k(~member, models)
        px = np.where(used, p, 0.0).sum(axis=1) / np.maximum(used.sum(axis=1), 1)
    else:
        out = first_k(~member, models)
        p_out = np.where(out, p, 0.0).sum(axis=1) / np.maximum(out.sum(axis=1), 1)
        px = 0.5 * ((1 + a) * p_out + (1 - a))
    return target - np.log(px)


@register(
    "rmia",
    description=(
        "RMIA: share of population texts z that x dominates, LR(x, z) = "
        "[p(x|target)/p(x)] / [p(z|target)/p(z)] >= gamma; ties broken by x's own ratio "
        "(Zarifzadeh et al. 2024)"
    ),
    needs=("shadows", "shadow_population"),
    cost="+1 pass per text per shadow model; the population once per run",
    gamma=1.0,
    a=1.0,
    online=0.0,
    models=0.0,
)
def rmia(
    inputs: AttackInputs, *, gamma: float, a: float, online: float, models: float
) -> np.ndarray:
    s, scores, member = _shadow_inputs(inputs)
    pop: Population = inputs.view("shadow_population")
    ratio = partial(rmia_log_ratio, a=a, online=bool(online), models=models)
    r_x = ratio(s, scores, member)  # (N,)
    r_z = np.sort(ratio(pop.target, pop.shadows, pop.member))
    # LR(x, z) >= gamma  <=>  r_z <= r_x - log(gamma): count by binary search, (N,)
    count = np.searchsorted(r_z, r_x - np.log(gamma), side="right")
    # a small population gives many ties (every x above all z scores 1.0); a tie-breaker in
    # [0, 1) that grows with r_x keeps the count readable: floor((Z + 1) * score) = count
    tie = np.minimum(expit(r_x), np.nextafter(1.0, 0.0))
    return (count + tie) / (len(r_z) + 1)
