"""Attacks that condition the target on a prefix (ReCaLL, Con-ReCall) or calibrate its token
probabilities by a reference corpus's token frequencies (DC-PDD).

Each prefix is one view, scored once for all attacks with its key/value cache computed once
(:func:`memaudit.scoring.prefixed.score_with_prefix`): about one target pass per text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np

from memaudit.errors import InputError
from memaudit.io.texts import jsonl_objects, read_texts, text_hash
from memaudit.scoring.prefixed import fit_prefix, score_with_prefix
from memaudit.scoring.tokenscores import TokenScores

from .base import AttackInputs, mean_logp, register, register_view
from .views import ViewContext

if TYPE_CHECKING:
    from memaudit.models.hf import HFCausalLM


# ---- prefix views ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Prefix:
    """A prefix's token ids, fitted to the window, and what the check found."""

    ids: list[int]
    warnings: list[str] = field(default_factory=list)


def _text_ids(ctx: ViewContext) -> list[list[int]]:
    return [list(t) for t in (ctx.token_ids or ctx.target.encode(ctx.texts))]


def read_prefix(ctx: ViewContext, setting: str, what: str) -> Prefix:
    """The first ``--recall-shots`` texts of the file in ``setting``, joined and tokenized.

    The shots are joined with nothing between them and tokenized once, as ReCaLL's authors
    build their prefix; the prefix is cut from its start to leave room for a text of the
    texts' average length (:func:`~memaudit.scoring.prefixed.fit_prefix`).

    Raises
    ------
    InputError
        The file is missing or invalid, holds fewer texts than ``--recall-shots``, or the
        texts leave no room for a prefix.
    """
    path, shots = ctx.option(setting), ctx.option("recall_shots")
    records = read_texts(path).records
    if len(records) < shots:
        raise InputError(
            f"{len(records)} text(s) for a {what} of {shots} shots (--recall-shots)", path=path
        )
    chosen = records[:shots]
    ids = ctx.target.encode(["".join(r.text for r in chosen)])[0]
    lengths = [len(t) for t in _text_ids(ctx)]
    window, _ = ctx.settings.window(ctx.target)
    fitted, cut = fit_prefix(ids, int(np.mean(lengths)), window)
    warnings = []
    if cut:
        warnings.append(
            f"the {what} ({path}) was cut to its last {len(fitted)} of {len(ids)} tokens to "
            f"leave room for texts of average length in the window of {window}"
        )
    n_long = sum(n > window - len(fitted) for n in lengths)
    if n_long:
        warnings.append(
            f"{n_long} text(s) are longer than the {window - len(fitted)} tokens that fit after "
            f"the {what}; their later tokens are scored without it"
        )
    scored = {text_hash(t) for t in ctx.texts}
    shared = [r.where for r in chosen if text_hash(r.text) in scored]
    if shared:
        warnings.append(
            f"{len(shared)} text(s) of the {what} are also scored ({', '.join(shared[:3])}"
            f"{', ...' if len(shared) > 3 else ''}): their scores are inflated"
        )
    return Prefix(fitted, warnings)


def _score_after(ctx: ViewContext, prefix: Prefix, stage: str) -> tuple[TokenScores, dict]:
    scores, stats = score_with_prefix(
        cast("HFCausalLM", ctx.target),
        prefix.ids,
        ctx.texts,
        _text_ids(ctx),
        ctx.settings,
        cache_root=ctx.cache_root,
        progress=ctx.progress,
        stage=stage,
    )
    return scores, {"target": stats}


@register_view(
    "nonmember_prefix",
    description="the target on each text after a prefix of non-member texts (--prefix-texts)",
    cost="+1 target pass (the prefix's cache computed once)",
    requires=("prefix_texts",),
    prepare=lambda ctx: read_prefix(ctx, "prefix_texts", "non-member prefix"),
)
def nonmember_prefix(ctx: ViewContext, state: Prefix) -> tuple[TokenScores, dict]:
    return _score_after(ctx, state, "scoring after the non-member prefix")


@register_view(
    "member_prefix",
    description="the target on each text after a prefix of member texts (--member-prefix-texts)",
    cost="+1 target pass (the prefix's cache computed once)",
    requires=("member_prefix_texts",),
    prepare=lambda ctx: read_prefix(ctx, "member_prefix_texts", "member prefix"),
)
def member_prefix(ctx: ViewContext, state: Prefix) -> tuple[TokenScores, dict]:
    return _score_after(ctx, state, "scoring after the member prefix")


# ---- token frequencies ----------------------------------------------------------------------


@dataclass(frozen=True)
class TokenFrequencies:
    """Laplace-smoothed unigram probabilities of a reference corpus, by token id.

    ``probs[v] = (count(v) + 1) / (total + |V|)``; NaN for ids the texts do not hold when the
    counts came from an index (only those are queried). The same for every text, so
    ``subset`` returns it unchanged.
    """

    probs: np.ndarray  # (V,) float64
    source: str

    def subset(self, indices: Iterable[int]) -> TokenFrequencies:
        return self


def read_token_counts(path: str, vocab_size: int) -> dict[int, int]:
    """``{"id": token id, "count": n}`` per line; a bad id, count or repeated id names file:line."""
    counts: dict[int, int] = {}
    for line, obj in jsonl_objects(path, what="token frequency file"):
        tid, n = obj.get("id"), obj.get("count")
        if not isinstance(tid, int) or isinstance(tid, bool) or not 0 <= tid < vocab_size:
            raise InputError(
                f"'id' must be a token id in [0, {vocab_size}), got {tid!r}", path=path, line=line
            )
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise InputError(f"'count' must be an integer >= 0, got {n!r}", path=path, line=line)
        if tid in counts:
            raise InputError(f"token id {tid} is listed twice", path=path, line=line)
        counts[tid] = n
    if not counts:
        raise InputError("no token counts", path=path)
    return counts


def _prepare_frequencies(ctx: ViewContext) -> dict[int, int] | None:
    path = ctx.option("token_frequencies")
    return None if path is None else read_token_counts(path, ctx.target.vocab_size)


@register_view(
    "token_frequencies",
    description=(
        "unigram token frequencies of a reference corpus (--token-frequencies, else the "
        "counts of --index)"
    ),
    cost="no model pass (one index count per distinct token with --index)",
    requires=("token_frequencies|index",),
    prepare=_prepare_frequencies,
)
def token_frequencies(
    ctx: ViewContext, counts: dict[int, int] | None
) -> tuple[TokenFrequencies, dict]:
    vocab = ctx.target.vocab_size
    probs = np.full(vocab, np.nan)
    if counts is not None:  # a file given with --index too: the file wins
        full = np.zeros(vocab)
        full[list(counts)] = list(counts.values())
        total, probs, source = sum(counts.values()), full, ctx.option("token_frequencies")
    else:
        index = ctx.index
        if index is None:  # select_attacks guarantees one of the two
            raise InputError("dc_pdd needs --token-frequencies or --index")
        needed = sorted({int(v) for t in _text_ids(ctx) for v in t})
        probs[needed] = [index.count([v]) for v in needed]
        total, source = len(index), "index"
    return TokenFrequencies((probs + 1) / (total + vocab), str(source)), {}


# ---- the attacks ----------------------------------------------------------------------------


@register(
    "recall",
    description=(
        "ReCaLL: LL(x | non-member prefix) / LL(x), mean token log-likelihoods (Xie et al. 2024)"
    ),
    needs=("nonmember_prefix",),
    cost="+1 target pass (the prefix's cache computed once)",
)
def recall(inputs: AttackInputs) -> np.ndarray:
    # both LLs are negative: a member's likelihood drops more after a non-member prefix, so
    # its ratio is larger (the authors rank by this ratio as it is)
    ll = mean_logp(inputs.target)
    return mean_logp(inputs.view("nonmember_prefix")) / np.minimum(ll, -1e-6)


@register(
    "con_recall",
    description=(
        "Con-ReCall: (LL(x | non-member prefix) - gamma LL(x | member prefix)) / LL(x) "
        "(Wang et al. 2024)"
    ),
    needs=("nonmember_prefix", "member_prefix"),
    cost="+2 target passes (one per prefix, each prefix's cache computed once)",
    gamma=0.5,
)
def con_recall(inputs: AttackInputs, *, gamma: float) -> np.ndarray:
    ll = mean_logp(inputs.target)
    contrast = mean_logp(inputs.view("nonmember_prefix")) - gamma * mean_logp(
        inputs.view("member_prefix")
    )
    return contrast / np.minimum(ll, -1e-6)


@register(
    "dc_pdd",
    description=(
        "DC-PDD: mean over first occurrences of min(p(x_t) * -log f(x_t), a), f the "
        "reference corpus's smoothed token frequency (Zhang et al. 2024)"
    ),
    needs=("token_frequencies",),
    a=0.01,
)
def dc_pdd(inputs: AttackInputs, *, a: float) -> np.ndarray:
    freqs = inputs.view("token_frequencies").probs  # (V,)
    out = []
    for t in inputs.target:
        scored = np.asarray(t.token_ids[1:], dtype=np.int64)  # the tokens logp scores
        _, first = np.unique(scored, return_index=True)  # each token's first occurrence
        first.sort()
        ce = np.exp(t.logp[first].astype(np.float64)) * -np.log(freqs[scored[first]])
        out.append(np.minimum(ce, a).mean() if len(first) else np.nan)
    return np.array(out)
