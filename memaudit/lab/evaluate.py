"""Measuring what a model kept of its planted canaries: extraction, recognition, exposure, MIA.

Everything is grouped by the canaries' repetition level; twins (never inserted) are the
non-members of every comparison. All model work goes through the scoring engine (cached)
and the batched greedy generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from memaudit.attacks import parse_attacks
from memaudit.attacks.views import score_views
from memaudit.io.progress import Progress
from memaudit.metrics import membership_metrics, roc_auc
from memaudit.models.generation import greedy_generate
from memaudit.scoring.engine import ScoreSettings, score_texts

from .canaries import TEMPLATES, Canary, candidates
from .verbatim import compare

LAB_ATTACKS = "loss,zlib,min_k,min_k_pp,lowercase"


@dataclass(frozen=True)
class CanaryResult:
    canary: Canary
    generated: str  # what greedy decoding wrote after the prefix
    exact: bool  # the whole rest of the canary came back
    secret_found: bool  # the secret appears in the generation
    token_match: float
    loss: float  # mean token log-likelihood (higher = more familiar)
    exposure: float  # bits, from a skew-normal fit to the candidates' log-perplexities
    exposure_rank: int  # 1 + candidates more likely than the true secret


def prompt_split(model, canary: Canary) -> tuple[list[int], list[int]]:
    """The canary's tokens as the model encodes them (its BOS rule included), cut where its
    prefix ends: (prompt ids, ids to reproduce).

    Tokenizing the prefix alone could merge differently at the boundary, so the cut is taken
    from the tokenized full text: the longest run of tokens that decodes inside the prefix. A
    leading BOS (``--bos always``: the lab's document break, which training put before every
    insertion) stays in the prompt, so the prompt and the scored text have the same context.
    """
    ids = model.encode([canary.text])[0]
    j = prefix_cut(model.tokenizer, ids, canary.prefix)
    return ids[:j], ids[j:]


def prefix_cut(tokenizer, ids: list[int], prefix: str) -> int:
    """How many of a text's tokens decode inside its ``prefix`` (at least 1, leaving at least 1);
    a leading BOS decodes to nothing, so it is counted in and never ends the prompt early."""
    j = 1
    while j < len(ids) - 1 and prefix.startswith(
        tokenizer.decode(ids[: j + 1], skip_special_tokens=True)
    ):
        j += 1
    return j


def exposure(secret_nll: float, candidate_nll: np.ndarray, space_bits: float) -> tuple[float, int]:
    """Exposure (Carlini et al. 2019) of a secret among random candidates of its template.

    exposure = log2 |R| - log2 rank. With |R| too large to enumerate, rank / |R| is read off
    a skew-normal fitted to the candidates' log-perplexities: exposure = -log2 P(X <= nll).
    Capped at log2 |R|. Also returns the empirical rank among the candidates.
    """
    from scipy.stats import skewnorm

    params = skewnorm.fit(candidate_nll)
    log_p = skewnorm.logcdf(secret_nll, *params) / math.log(2)
    rank = 1 + int((candidate_nll < secret_nll).sum())
    return float(min(space_bits, max(0.0, -log_p))), rank


@dataclass(frozen=True)
class CanaryEvaluation:
    """What ``evaluate_canaries`` measured: per canary, per attack, and the summary by level."""

    canaries: list[CanaryResult]  # members and twins, in ledger order
    attack_scores: dict[str, np.ndarray]  # attack -> (canaries,) score, higher = member
    summary: dict[str, Any]  # {"mia": ..., "by_level": ...}: JSON-shaped, as results.json shows it


def evaluate_canaries(
    model,
    canaries: list[Canary],
    *,
    n_candidates: int = 200,
    cache_root=None,
    seed: int = 0,
    n_bootstrap: int = 1000,
    progress: Progress | None = None,
) -> CanaryEvaluation:
    """Extraction, recognition, exposure and MIA of members vs twins, overall and per level."""
    texts = [c.text for c in canaries]

    splits = [prompt_split(model, c) for c in canaries]
    longest = max(len(rest) for _, rest in splits)
    generated = greedy_generate(
        model, [p for p, _ in splits], longest, progress=progress, stage="extracting"
    )
    matches = [compare(g[: len(rest)], rest) for g, (_, rest) in zip(generated, splits)]
    gen_texts = [model.tokenizer.decode(g[: len(rest)]) for g, (_, rest) in zip(generated, splits)]

    inputs, _ = score_views(
        model,
        None,
        texts,
        ScoreSettings(),
        lowercase=True,
        cache_root=cache_root,
        progress=progress,
    )
    specs = parse_attacks(LAB_ATTACKS)
    attack_scores = {s.column: s(inputs) for s in specs}
    loss = attack_scores["loss"]

    pools = [candidates(c, n_candidates, seed=seed) for c in canaries]
    flat = [t for pool in pools for t in pool]
    cand_scores, _ = score_texts(
        model, flat, cache_root=cache_root, progress=progress, stage="exposure candidates"
    )
    cand_nll = -np.array([t.logp.sum(dtype=np.float64) for t in cand_scores]).reshape(
        len(canaries), n_candidates
    )
    own_nll = -np.array([t.logp.sum(dtype=np.float64) for t in inputs.target])
    per_canary = []
    for i, c in enumerate(canaries):
        bits, rank = exposure(own_nll[i], cand_nll[i], TEMPLATES[c.template].bits)
        per_canary.append(
            CanaryResult(
                c,
                gen_texts[i],
                matches[i].exact,
                c.secret in gen_texts[i],
                matches[i].token_match,
                float(loss[i]),
                bits,
                rank,
            )
        )
    summary = _summarize(per_canary, attack_scores, n_bootstrap=n_bootstrap, seed=seed)
    return CanaryEvaluation(canaries=per_canary, attack_scores=attack_scores, summary=summary)


def _summarize(
    results: list[CanaryResult],
    attack_scores: dict[str, np.ndarray],
    *,
    n_bootstrap: int,
    seed: int,
) -> dict:
    labels = np.array([r.canary.member for r in results], dtype=int)
    levels = np.array([r.canary.level for r in results])
    by_id = {r.canary.id: r for r in results}
    overall = {
        name: {
            k: e.to_dict()
            for k, e in membership_metrics(v, labels, n_bootstrap=n_bootstrap, seed=seed).items()
        }
        for name, v in attack_scores.items()
    }
    per_level = {}
    for level in sorted(set(levels.tolist())):
        sel = levels == level
        members = [r for r in results if r.canary.level == level and r.canary.member]
        twins = [r for r in results if r.canary.level == level and not r.canary.member]
        recognized = [by_id[m.canary.id].loss > by_id[m.canary.pair_id].loss for m in members]
        per_level[level] = {
            "members": len(members),
            "exact": float(np.mean([m.exact for m in members])),
            "secret_found": float(np.mean([m.secret_found for m in members])),
            "token_match": float(np.mean([m.token_match for m in members])),
            "twins_exact": float(np.mean([t.exact for t in twins])),
            "recognition": float(np.mean(recognized)),
            "exposure": float(np.mean([m.exposure for m in members])),
            "twins_exposure": float(np.mean([t.exposure for t in twins])),
            "auc": {name: roc_auc(v[sel], labels[sel]) for name, v in attack_scores.items()},
        }
    return {"mia": overall, "by_level": per_level}
