"""The scoring engine: one forward pass per text window, every per-token statistic at once.

For each text it records, per token, the log-probability of the actual token, the mean
``mu`` and standard deviation ``sigma`` of log p(v) under the next-token distribution (for
Min-K%++), and whether the token was the argmax. Texts longer than the window are scored
with sliding windows so that every token is scored exactly once, with as much context as
the window allows. Results are cached on disk in shards (see :mod:`memaudit.scoring.cache`).

How it stays fast and small:
- windows are sorted by length and packed into batches by a padded-token budget;
- only the hidden states at scored positions go through the vocabulary projection, in
  chunks, so memory never holds (batch x length x vocab) logits;
- statistics are computed in float32 whatever the model's dtype.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch

from memaudit.errors import InputError
from memaudit.io.progress import Progress
from memaudit.io.texts import text_hash
from memaudit.models.base import CausalLM

from .cache import ScoreCache
from .tokenscores import TextScores, TokenScores

T = TypeVar("T")

ENGINE_VERSION = 3  # bump when the numbers the engine writes change meaning


@dataclass(frozen=True)
class ScoreSettings:
    """How texts are cut into windows and batched.

    Only ``max_length`` and ``stride`` change the numbers (they are part of the cache key);
    the rest trade speed for memory.

    Parameters
    ----------
    max_length : int or None
        Window length in tokens; None means the model's context length.
    stride : int or None
        How far each next window moves; None means half a window. Tokens past the first
        window are scored with at least ``max_length - stride`` tokens of context.
    batch_tokens : int
        Padded tokens per forward batch.
    max_batch_size : int
        Windows per forward batch at most.
    projection_mb : int
        Memory budget (MiB) for one chunk of float32 logits in the vocabulary projection.
    shard_texts : int
        Texts per cache shard; a finished shard is never recomputed.
    """

    max_length: int | None = None
    stride: int | None = None
    batch_tokens: int = 8192
    max_batch_size: int = 64
    projection_mb: int = 128
    shard_texts: int = 256

    def __post_init__(self) -> None:
        for name in ("batch_tokens", "max_batch_size", "projection_mb", "shard_texts"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_length is not None and self.max_length < 2:
            raise InputError(f"max_length must be >= 2, got {self.max_length}")
        if self.stride is not None and self.stride < 1:
            raise InputError(f"stride must be >= 1, got {self.stride}")

    def window(self, model: CausalLM) -> tuple[int, int]:
        """Resolved (max_length, stride) for this model."""
        length = self.max_length or model.max_length
        if length > model.max_length:
            raise InputError(
                f"max_length {length} exceeds the model's context of {model.max_length} tokens"
            )
        stride = self.stride or max(1, length // 2)
        if stride > length - 1:
            raise InputError(f"stride {stride} must be smaller than max_length {length}")
        return length, stride


@dataclass
class ScoreStats:
    """What one call of :func:`score_texts` did; the cached path does zero forward passes."""

    texts: int = 0
    unique_texts: int = 0
    cached_texts: int = 0
    forward_passes: int = 0  # batched forward calls of the model
    windows: int = 0
    tokens_scored: int = 0
    shards_written: int = 0
    seconds: float = 0.0
    corrupt_shards: list[str] = field(default_factory=list)  # set aside and scored again

    def merge(self, other: ScoreStats) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


@dataclass(frozen=True)
class Window:
    text: int  # index into the shard's texts
    begin: int  # first token fed to the model
    end: int  # one past the last token fed
    first_scored: int  # first token whose log-prob this window records


def windows_for(n_tokens: int, length: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first_scored) for each window of a text of ``n_tokens`` tokens.

    Every token from position 1 on is scored by exactly one window.

    Examples
    --------
    >>> windows_for(5, 8, 4)
    [(0, 5, 1)]
    >>> windows_for(10, 6, 2)
    [(0, 6, 1), (2, 8, 6), (4, 10, 8)]
    """
    if n_tokens <= length:
        return [(0, n_tokens, 1)] if n_tokens > 1 else []
    out, begin, first = [], 0, 1
    while True:
        end = min(begin + length, n_tokens)
        out.append((begin, end, first))
        if end == n_tokens:
            return out
        first, begin = end, begin + stride


def scorer_key(model: CausalLM, length: int, stride: int) -> str:
    ident = {
        "engine": ENGINE_VERSION,
        "model": model.fingerprint,
        "tokenizer": model.tokenizer_fingerprint,
        "dtype": str(getattr(model, "dtype", "")),
        # the BOS rule changes the token ids, so the scores (an adapter without one: None)
        "bos": getattr(model, "bos_key", None),
        "max_length": length,
        "stride": stride,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def score_texts(
    model: CausalLM,
    texts: Sequence[str],
    settings: ScoreSettings | None = None,
    *,
    cache_root: str | Path | None = None,
    token_ids: Sequence[Sequence[int]] | None = None,
    progress: Progress | None = None,
    stage: str = "scoring",
) -> tuple[TokenScores, ScoreStats]:
    """Score every token of every text with one forward pass per window.

    Parameters
    ----------
    model : CausalLM
        The model adapter.
    texts : sequence of str
        Texts to score; duplicates are scored once.
    settings : ScoreSettings, optional
    cache_root : path-like or None, keyword-only
        Root of the on-disk shard cache; None disables caching.
    token_ids : sequence of sequences of int, optional, keyword-only
        The texts already tokenized by ``model.encode`` (saves tokenizing twice).
    progress : Progress, optional, keyword-only
        Told ``(stage, tokens done, tokens in total)`` after every batch.
    stage : str, keyword-only
        The stage name given to ``progress``.

    Returns
    -------
    scores : TokenScores
        In the order of ``texts``.
    stats : ScoreStats
    """
    start = time.perf_counter()
    settings = settings or ScoreSettings()
    length, stride = settings.window(model)
    cache = ScoreCache(cache_root, scorer_key(model, length, stride))
    hashes = [text_hash(t) for t in texts]
    stats = ScoreStats(texts=len(texts))

    first_index: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first_index.setdefault(h, i)
    stats.unique_texts = len(first_index)
    results = cache.load([h for h in first_index if h in cache])
    # the caller's own token ids that differ from the cached ones: scored, but not cached
    own = set() if token_ids is None else _not_as_cached(results, token_ids, first_index)
    for h in own:
        del results[h]
    pending = [h for h in first_index if h not in results]
    stats.cached_texts = stats.unique_texts - len(pending)

    if pending:
        if token_ids is None:
            ids = dict(zip(pending, model.encode([texts[first_index[h]] for h in pending])))
        else:
            ids = {h: list(token_ids[first_index[h]]) for h in pending}
        # Sorted by length (ties by hash) so that batches pad little and a resumed run cuts
        # the remaining texts into exactly the shards an uninterrupted run would have made.
        order = sorted(pending, key=lambda h: (len(ids[h]), h))
        # by scored token, after every batch: one long text moves the bar as much as many short
        tally = _Tally(progress, stage, sum(max(len(ids[h]) - 1, 0) for h in order))
        cuts = [
            order[s : s + settings.shard_texts] for s in range(0, len(order), settings.shard_texts)
        ]
        shards = [Shard(cut, [ids[h] for h in cut]) for cut in cuts]
        runner = _RUNNER.get() or LocalShards()
        for shard, shard_scores, shard_stats in runner.run_shards(
            model, cache, shards, own, window=(length, stride), settings=settings, on_batch=tally
        ):
            results.update(zip(shard.hashes, shard_scores))
            stats.merge(shard_stats)
            stats.shards_written += cache.dir is not None
    stats.seconds = time.perf_counter() - start
    stats.corrupt_shards = [str(p) for p in cache.set_aside]
    return TokenScores.from_texts([results[h] for h in hashes]), stats


@dataclass(frozen=True)
class Shard:
    """One cache shard's worth of texts: their hashes and token ids, shortest first."""

    hashes: list[str]
    ids: list[list[int]]


class ShardRunner(Protocol):
    """Scores shards and writes each to the cache; yields them as they finish, in any order.

    The local engine scores them here, one after another; the Ray engine
    (:mod:`memaudit.scoring.distributed`) deals them out to its workers.
    """

    def run_shards(
        self,
        model: CausalLM,
        cache: ScoreCache,
        shards: list[Shard],
        uncached: set[str],
        *,
        window: tuple[int, int],
        settings: ScoreSettings,
        on_batch: Callable[[int], None],
    ) -> Iterator[tuple[Shard, list[TextScores], ScoreStats]]:
        """``on_batch`` is told the scored tokens of each batch as it finishes (a runner that
        does not see batches tells it each shard's)."""


class LocalShards:
    """The local engine: each shard scored in this process, then written (but ``uncached``)."""

    def run_shards(
        self,
        model: CausalLM,
        cache: ScoreCache,
        shards: list[Shard],
        uncached: set[str],
        *,
        window: tuple[int, int],
        settings: ScoreSettings,
        on_batch: Callable[[int], None],
    ) -> Iterator[tuple[Shard, list[TextScores], ScoreStats]]:
        for shard in shards:
            scores, stats = _score_shard(model, shard.ids, *window, settings, on_batch=on_batch)
            cache.save({h: v for h, v in zip(shard.hashes, scores) if h not in uncached})
            yield shard, scores, stats


_RUNNER: ContextVar[ShardRunner | None] = ContextVar("memaudit_shard_runner", default=None)


@contextmanager
def shard_runner(runner: ShardRunner) -> Iterator[None]:
    """Within the block, every :func:`score_texts` call has ``runner`` score its shards.

    The planning (cache look-up, length sort, shard cuts) stays here, so any runner scores
    exactly the shards the local engine would.
    """
    token = _RUNNER.set(runner)
    try:
        yield
    finally:
        _RUNNER.reset(token)


def _not_as_cached(
    cached: dict[str, TextScores], token_ids: Sequence[Sequence[int]], first_index: dict[str, int]
) -> set[str]:
    return {
        h
        for h, scores in cached.items()
        if not np.array_equal(scores.token_ids, np.asarray(token_ids[first_index[h]]))
    }


class _Tally:
    """Counts scored tokens and tells ``progress`` (if any) after each batch."""

    def __init__(self, progress: Progress | None, stage: str, total: int) -> None:
        self.progress, self.stage, self.total, self.done = progress, stage, total, 0

    def __call__(self, tokens: int) -> None:
        self.done += tokens
        if self.progress is not None:
            self.progress(self.stage, self.done, self.total)


def _score_shard(
    model: CausalLM,
    ids: list[list[int]],
    length: int,
    stride: int,
    settings: ScoreSettings,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[TextScores], ScoreStats]:
    """Score one shard's texts. Results stay on the device until the shard is done: one copy
    back.
    """
    stats = ScoreStats()
    windows = [
        Window(i, b, e, f)
        for i, t in enumerate(ids)
        for b, e, f in windows_for(len(t), length, stride)
    ]
    windows.sort(key=lambda w: (w.end - w.begin, w.text, w.begin))
    n_scored = np.array([max(len(t) - 1, 0) for t in ids])
    starts = np.concatenate([[0], np.cumsum(n_scored)])  # text i's scored tokens in the flat arrays
    where, parts = [], []
    for batch in _batches(windows, settings):
        parts.append(_score_batch(model, ids, batch, settings))
        # flat destination of each scored token; scored arrays start at token 1
        where.append(
            np.concatenate(
                [starts[w.text] + np.arange(w.first_scored - 1, w.end - 1) for w in batch]
            )
        )
        stats.forward_passes += 1
        stats.windows += len(batch)
        if on_batch is not None:
            on_batch(len(where[-1]))
    flat = [np.full(int(starts[-1]), np.nan, np.float32) for _ in range(3)] + [
        np.zeros(int(starts[-1]), bool)
    ]
    if parts:
        dest = np.concatenate(where)
        for array, values in zip(flat, zip(*parts)):
            array[dest] = torch.cat(values).cpu().numpy()
        stats.tokens_scored = len(dest)
    logp, mu, sigma, argmax = flat
    texts = []
    for i, t in enumerate(ids):
        s = slice(starts[i], starts[i + 1])
        texts.append(TextScores(np.asarray(t, np.int32), logp[s], mu[s], sigma[s], argmax[s]))
    return texts, stats


def _batches(windows: list[Window], settings: ScoreSettings) -> Iterator[list[Window]]:
    return pack_batches(windows, lambda w: w.end - w.begin, settings)


def pack_batches(
    items: Sequence[T], width: Callable[[T], int], settings: ScoreSettings
) -> Iterator[list[T]]:
    """Consecutive ``items`` in batches of at most ``settings.batch_tokens`` padded tokens and
    ``settings.max_batch_size`` rows; ``items`` are sorted by ``width``, so the last one added
    to a batch is its widest.
    """
    batch: list[T] = []
    for item in items:
        if batch and (
            width(item) * (len(batch) + 1) > settings.batch_tokens
            or len(batch) >= settings.max_batch_size
        ):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


@torch.no_grad()
def _score_batch(
    model: CausalLM, ids: Sequence[Sequence[int]], batch: list[Window], settings: ScoreSettings
) -> tuple[torch.Tensor, ...]:
    """Forward one batch of windows; per-token statistics of its scored tokens, on the device."""
    width = max(w.end - w.begin for w in batch)
    padded = np.zeros((len(batch), width), dtype=np.int64)  # (B, T); right-padded with id 0
    mask = np.zeros((len(batch), width), dtype=np.int64)  # (B, T); 0 marks the pads
    row_parts, col_parts = [], []
    for r, w in enumerate(batch):
        padded[r, : w.end - w.begin] = ids[w.text][w.begin : w.end]
        mask[r, : w.end - w.begin] = 1
        # the hidden state at position p predicts token p + 1
        col_parts.append(np.arange(w.first_scored - 1 - w.begin, w.end - 1 - w.begin))
        row_parts.append(np.full(len(col_parts[-1]), r))
    rows, cols = np.concatenate(row_parts), np.concatenate(col_parts)
    targets = torch.from_numpy(padded[rows, cols + 1]).to(model.device)  # (N,)
    input_ids = torch.from_numpy(padded).to(model.device)  # (B, T)
    attention = torch.from_numpy(mask).to(model.device)  # (B, T)
    index = torch.from_numpy(rows).to(model.device), torch.from_numpy(cols).to(model.device)
    if getattr(model, "chunked", True):
        hidden = model.hidden_states(input_ids, attention)[index]  # (N, D)
        project: Callable[[torch.Tensor], torch.Tensor] = model.project
    else:  # architectures whose logits are not a plain projection of the last hidden state
        hidden = model.logits(input_ids, attention)[index].float()  # (N, V)
        project = _identity
    chunk = max(1, settings.projection_mb * 2**20 // (4 * 3 * model.vocab_size))
    parts = [
        token_stats(project(hidden[i : i + chunk]), targets[i : i + chunk])
        for i in range(0, len(targets), chunk)
    ]
    return tuple(torch.cat(x) for x in zip(*parts))  # logp, mu, sigma, is_argmax: (N,) each


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


CANCELLATION = 0.1  # var / mu^2 below which token_stats sums a row's variance centred


def token_stats(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-position statistics of the next-token distribution.

    Parameters
    ----------
    logits : (N, V) float32 tensor
    targets : (N,) long tensor of the actual next tokens

    Returns
    -------
    logp, mu, sigma : (N,) float32
        log p(target), E[log p], std[log p] under p = softmax(logits).
    is_argmax : (N,) bool
    """
    logp_all = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
    # At most two (N, V) tensors live at once (the engine's chunk budget assumes three): the
    # caller's logits are freed once log-softmaxed.
    del logits
    logp = logp_all.gather(1, targets[:, None]).squeeze(1)
    is_argmax = logp_all.argmax(-1) == targets
    p_logp = logp_all.exp().mul_(logp_all)  # (N, V)
    mu = p_logp.sum(-1)  # (N,)
    var = torch.linalg.vecdot(p_logp, logp_all) - mu * mu  # (N,) E[log^2 p] - mu^2
    del p_logp
    # Near-uniform rows (a fresh model, a large vocabulary) have |mu| >> sigma, and there the
    # difference of squares loses ~1e-4 of sigma to float32 cancellation: those rows (few in a
    # trained model) are summed again centred, still within two (N, V) tensors.
    rows = (var < CANCELLATION * mu * mu).nonzero().squeeze(1)  # (R,)
    if 2 * len(rows) > len(mu):  # most rows: all of them, in place
        rows = torch.arange(len(mu), device=mu.device)
        centred = logp_all.sub_(mu[:, None])  # (N, V): log p - mu
    else:
        centred = logp_all[rows].sub_(mu[rows, None])  # (R, V), R <= N / 2
    if len(rows):
        p = (centred + mu[rows, None]).exp_()  # (R, V)
        var[rows] = torch.linalg.vecdot(p.mul_(centred), centred)
    sigma = var.clamp_min(0).sqrt()
    return logp, mu, sigma, is_argmax
