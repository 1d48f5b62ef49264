"""Texts scored after one shared prefix, whose keys and values are computed once.

ReCaLL-style attacks need ``log p(x_t | P, x_<t)`` for every text ``x`` under the same prefix
``P``. Running ``P + x`` through the model for every text would repeat the prefix's work
``N`` times; here the prefix goes through the model once, and each batch of texts starts
from a copy of its key/value cache expanded along the batch, so a text costs about what its
own plain pass costs (its tokens also attend to the prefix's keys).

The scored tokens of a text are the ones :func:`~memaudit.scoring.engine.score_texts`
scores (every token but the first), so a conditional and a plain score compare the same
tokens. Its first token is fed, but not scored: with a BOS tokenizer it is the BOS, whose
probability after a prefix means nothing.

The window rule: prefix and text share one window of ``L`` tokens. A text's first
``L - len(prefix)`` tokens are scored after the prefix; the tokens of a longer text past
those are scored as :func:`~memaudit.scoring.engine.score_texts` scores them (sliding
windows of the text alone, no prefix; free when the score cache holds the text).
:func:`fit_prefix` cuts a prefix to leave room for the texts' average length, as ReCaLL's
authors fit their shots.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from memaudit.errors import InputError
from memaudit.io.progress import Progress
from memaudit.models.generation import _cache_name

from .engine import ScoreSettings, ScoreStats, pack_batches, score_texts, token_stats
from .tokenscores import TextScores, TokenScores

if TYPE_CHECKING:
    from memaudit.models.hf import HFCausalLM


def fit_prefix(prefix_ids: Sequence[int], text_tokens: int, window: int) -> tuple[list[int], bool]:
    """The prefix, cut from its start so that it and a text of ``text_tokens`` fit one window.

    The end of the prefix is kept (the shots nearest the text), as ReCaLL's authors keep
    their last shots when the prefix and a text of the average length do not fit. Returns
    the ids and whether any were cut.

    Raises
    ------
    InputError
        ``text_tokens`` fills the window: no prefix token would fit.

    Examples
    --------
    >>> fit_prefix([1, 2, 3, 4], 5, 8)
    ([2, 3, 4], True)
    """
    room = window - text_tokens
    if room < 1:
        raise InputError(
            f"texts of {text_tokens} tokens on average leave no room for a prefix in a window "
            f"of {window} tokens"
        )
    ids = list(prefix_ids)
    return (ids[-room:], True) if len(ids) > room else (ids, False)


def score_with_prefix(
    model: HFCausalLM,
    prefix_ids: Sequence[int],
    texts: Sequence[str],
    token_ids: Sequence[Sequence[int]],
    settings: ScoreSettings | None = None,
    *,
    cache_root: str | Path | None = None,
    progress: Progress | None = None,
    stage: str = "scoring after a prefix",
) -> tuple[TokenScores, ScoreStats]:
    """Score every token but the first of each text, conditioned on ``prefix_ids``.

    Parameters
    ----------
    model : HFCausalLM
        A transformers adapter (``model.model``); the prefix's cache is the model's own.
    prefix_ids : sequence of int
        The prefix's token ids (at least one), shared by every text.
    texts : sequence of str
        The texts (the cache key of the tokens scored without the prefix).
    token_ids : sequence of sequences of int
        Each text's ids as ``model.encode`` gives them.
    settings : ScoreSettings, optional
        ``batch_tokens`` bounds rows x (prefix + text) tokens, since every row holds its
        own copy of the prefix's keys and values.
    cache_root : path-like or None, keyword-only
        The score cache, for the tokens of long texts past the prefix's window.

    Returns
    -------
    scores : TokenScores
        In the order of ``token_ids``; ``logp`` of token t is ``log p(x_t | prefix, x_<t)``
        for ``t < L - len(prefix)``, beyond that the text's own windowed score.
    stats : ScoreStats
        ``forward_passes`` counts the prefix's pass and any pass over the long texts.
    """
    start = time.perf_counter()
    settings = settings or ScoreSettings()
    window, _ = settings.window(model)
    n_prefix = len(prefix_ids)
    room = window - n_prefix  # text tokens that fit after the prefix
    if n_prefix < 1 or room < 2:
        raise InputError(
            f"a prefix of {n_prefix} tokens must leave room for a text in the window of "
            f"{window} tokens"
        )
    heads = [list(t[:room]) for t in token_ids]
    stats = ScoreStats(texts=len(token_ids), unique_texts=len(token_ids))
    lm = model.model.base_model if model.chunked else model.model
    cache_arg = _cache_name(lm)
    prefix = torch.tensor([list(prefix_ids)], device=model.device)  # (1, P)
    with torch.no_grad():
        out = lm(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True)
    prefix_cache = getattr(out, cache_arg)
    stats.forward_passes += 1

    results: dict[int, TextScores] = {}
    order = sorted(range(len(heads)), key=lambda i: len(heads[i]))
    total = sum(len(t) for t in heads)
    done = 0
    # each row holds the prefix's cache and its text: the padded width is both
    for batch in pack_batches(order, lambda i: n_prefix + len(heads[i]), settings):
        results.update(_score_batch(model, lm, cache_arg, prefix_cache, heads, batch, settings))
        stats.forward_passes += 1
        stats.windows += len(batch)
        done += sum(len(heads[i]) for i in batch)
        if progress is not None:
            progress(stage, done, total)
    long = [i for i, t in enumerate(token_ids) if len(t) > room]
    if long:
        plain, plain_stats = score_texts(
            model,
            [texts[i] for i in long],
            settings,
            cache_root=cache_root,
            token_ids=[token_ids[i] for i in long],
        )
        stats.merge(plain_stats)
        stats.texts = stats.unique_texts = len(token_ids)
        for j, i in enumerate(long):
            results[i] = _join(results[i], plain.text(j), room)
    stats.tokens_scored = int(sum(max(len(t) - 1, 0) for t in token_ids))
    stats.seconds = time.perf_counter() - start
    return TokenScores.from_texts([results[i] for i in range(len(token_ids))]), stats


def _join(head: TextScores, whole: TextScores, room: int) -> TextScores:
    """The head's scores after the prefix, then the whole text's own from token ``room`` on."""
    cut = room - 1  # scored arrays start at token 1
    return TextScores(
        whole.token_ids,
        *(np.concatenate([getattr(head, f)[:cut], getattr(whole, f)[cut:]]) for f in JOINED),
    )


JOINED = ("logp", "mu", "sigma", "is_argmax")


@torch.no_grad()
def _score_batch(
    model: HFCausalLM,
    lm: torch.nn.Module,
    cache_arg: str,
    prefix_cache: Any,
    token_ids: Sequence[Sequence[int]],
    batch: list[int],
    settings: ScoreSettings,
) -> dict[int, TextScores]:
    """One forward of a batch of texts after a copy of the prefix's cache."""
    n_prefix = prefix_cache.get_seq_length()
    width = max(len(token_ids[i]) for i in batch)
    padded = np.zeros((len(batch), width), dtype=np.int64)  # (B, T); right-padded with id 0
    mask = np.zeros((len(batch), n_prefix + width), dtype=np.int64)  # (B, P + T)
    mask[:, :n_prefix] = 1
    for r, i in enumerate(batch):
        padded[r, : len(token_ids[i])] = token_ids[i]
        mask[r, n_prefix : n_prefix + len(token_ids[i])] = 1
    cache = copy.deepcopy(prefix_cache)  # the forward appends to the cache it is given
    cache.batch_repeat_interleave(len(batch))
    input_ids = torch.from_numpy(padded).to(model.device)  # (B, T)
    out = lm(
        input_ids=input_ids,
        attention_mask=torch.from_numpy(mask).to(model.device),
        use_cache=True,
        **{cache_arg: cache},
    )
    states = out.last_hidden_state if model.chunked else out.logits  # (B, T, D) or (B, T, V)
    # the state at text position p predicts token p + 1: tokens 1..n-1 are scored
    lengths = [len(token_ids[i]) for i in batch]
    rows = np.concatenate([np.full(max(n - 1, 0), r) for r, n in enumerate(lengths)])
    cols = np.concatenate([np.arange(max(n - 1, 0)) for n in lengths])
    index = torch.from_numpy(rows).to(model.device), torch.from_numpy(cols).to(model.device)
    hidden = states[index]  # (N, D) or (N, V)
    targets = input_ids[index[0], index[1] + 1]  # (N,)
    chunk = max(1, settings.projection_mb * 2**20 // (4 * 3 * model.vocab_size))
    parts = [
        token_stats(
            model.project(hidden[c : c + chunk]) if model.chunked else hidden[c : c + chunk],
            targets[c : c + chunk],
        )
        for c in range(0, len(targets), chunk)
    ]
    if parts:
        flat = [torch.cat(x).cpu().numpy() for x in zip(*parts)]  # logp, mu, sigma, is_argmax
    else:  # only one-token texts: nothing to score
        flat = [np.zeros(0, np.float32)] * 3 + [np.zeros(0, bool)]
    starts = np.concatenate([[0], np.cumsum([max(n - 1, 0) for n in lengths])])
    result = {}
    for r, i in enumerate(batch):
        s = slice(starts[r], starts[r + 1])
        ids = np.asarray(token_ids[i], np.int32)
        result[i] = TextScores(ids, *(a[s] for a in flat))
    return result
