"""``memaudit contamination``: which benchmark items does a training corpus contain, and how
much does that inflate the score?

Each item's text (``text``, or ``question`` + separator + ``answer``) is cut into its
n-grams in the index's tokens (13 tokens by default, as in GPT-3 and lm-evaluation-harness;
50 bytes on a byte index). Per item: the share of its n-grams found in the corpus, the
longest verbatim match, the documents the matches come from, and ``contaminated`` when the
share reaches ``threshold`` (PaLM's 70% by default; 0 flags an item with any n-gram found,
GPT-3's rule). All n-grams of all items are looked up together (``match_keys``: one
vectorised binary search per chunk of them).

With a model, the GPT-3 / PaLM analysis: greedy exact-match accuracy and answer NLL on
dirty vs clean items and their differences with bootstrap CIs. Both come from one
teacher-forced pass over prompt + answer: the greedy continuation reproduces the answer
exactly when every answer token is the argmax given the tokens before it.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.texts import jsonl_objects
from memaudit.metrics import bootstrap_difference, cluster_bootstrap_mean, wilson_interval

from .config import (
    CONTAMINATION_THRESHOLD,
    NGRAM_BYTES,
    NGRAM_TOKENS,
    ContaminationConfig,
)
from .suffix import CorpusIndex

KEYS_PER_BATCH = 1 << 22  # n-gram tokens looked up per call (bounds the keys' memory)


@dataclass(frozen=True)
class BenchmarkItem:
    """One benchmark item: ``text`` is what is looked up, ``prompt`` + ``answer`` what a model
    is asked (no answer: the item is only looked up).
    """

    id: str
    text: str
    prompt: str
    answer: str | None = None


@dataclass(frozen=True)
class ItemContamination:
    """What the corpus holds of one item (lengths in the index's tokens)."""

    id: str
    n_tokens: int
    ngrams: int  # 0: shorter than n, never contaminated
    found: int  # n-grams found in the corpus
    share: float  # found / ngrams (NaN without n-grams)
    longest: int  # the longest verbatim match
    docs: list[str]  # source ids of the documents matched most (by tokens matched)
    contaminated: bool


def default_ngram(index: CorpusIndex) -> int:
    return NGRAM_BYTES if index.is_bytes else NGRAM_TOKENS


def find_contaminated(
    index: CorpusIndex,
    items: Sequence[BenchmarkItem | str | dict],
    *,
    ngram: int | None = None,
    threshold: float = CONTAMINATION_THRESHOLD,
    doc_limit: int = 5,
    separator: str = " ",
) -> list[ItemContamination]:
    """Each item's n-gram overlap with the indexed corpus, and whether it is contaminated.

    Parameters
    ----------
    index : CorpusIndex
        An opened index (``CorpusIndex.load``): a byte index or one of any tokenizer (the
        items are tokenized with the index's own).
    items : sequence of BenchmarkItem, str or dict
        Texts, or dicts with ``text`` or ``question`` (and optional ``id``, ``answer``).
    ngram : int, optional
        n; default 13 tokens (50 on a byte index).
    threshold : float
        Contaminated when at least this share of an item's n-grams occurs (and at least one
        does: 0 means any).
    doc_limit : int
        Documents listed per item at most.

    Raises
    ------
    InputError
        An item without text, or ``ngram`` larger than every item.
    """
    if not 0 <= threshold <= 1:
        raise InputError(f"threshold is a share of n-grams in [0, 1], got {threshold}")
    bench = as_items(items, separator=separator)
    n = ngram or default_ngram(index)
    if n < 1:
        raise InputError(f"ngram must be at least 1, got {n}")
    encoded = [np.asarray(ids, dtype=np.int64) for ids in index.encode([b.text for b in bench])]
    check_ngram(encoded, n, index.unit)
    capped = _capped_longest(index, encoded, n)
    spans = _verified_runs(index, encoded, capped, n)
    out = []
    for k, (item, ids, lcp) in enumerate(zip(bench, encoded, capped)):
        grams = max(0, len(ids) - n + 1)
        found = int((lcp[:grams] == n).sum())
        share = found / grams if grams else math.nan
        longest, docs = int(lcp.max(initial=0)), []
        if found:
            longest = max(length for _, length in spans[k])
            docs = _top_docs(index, ids.tolist(), spans[k], doc_limit)
        dirty = bool(found) and share >= threshold
        out.append(ItemContamination(item.id, len(ids), grams, found, share, longest, docs, dirty))
    return out


def _verified_runs(
    index: CorpusIndex, encoded: Sequence[np.ndarray], capped: Sequence[np.ndarray], n: int
) -> dict[int, list[tuple[int, int]]]:
    """Per item with a found n-gram: its maximal spans of >= n tokens found, (start, length).

    Found n-grams at consecutive positions a..b suggest the span ``[a, b + n)``; it cannot be
    longer (the n-gram at b + 1 is not found), and when it occurs whole it is the maximal
    span starting at a, and no position inside it starts a longer one. All suggested spans
    are checked in one batched search; an item with a span that does not occur whole (its
    n-grams come from different places) gets the exact ``longest`` instead.
    """
    runs: dict[int, list[tuple[int, int]]] = {}
    for k, lcp in enumerate(capped):
        at = np.flatnonzero(lcp[: max(0, len(lcp) - n + 1)] == n)
        if len(at):
            cut = np.flatnonzero(np.diff(at) > 1)
            starts, ends = np.r_[at[0], at[cut + 1]], np.r_[at[cut], at[-1]]
            runs[k] = [(int(a), int(b - a + n)) for a, b in zip(starts, ends)]
    flat = [(k, a, m) for k, rs_ in runs.items() for a, m in rs_]
    suggested = [encoded[k][a : a + m] for k, a, m in flat]
    whole = index.prefix_match(suggested) if flat else np.zeros(0, dtype=np.int64)
    broken = sorted({k for (k, _, m), got in zip(flat, whole) if got < m})
    for k, lengths in zip(broken, index.longest_many([encoded[k] for k in broken])):
        runs[k] = [(s["start"], s["length"]) for s in _spans(lengths, n)]
    return runs


def _spans(lengths: list[int], n: int) -> list[dict]:
    """The maximal spans of >= n tokens from the longest match at each position."""
    out, reach = [], 0
    for i, m in enumerate(lengths):
        if m >= n and i + m > reach:
            out.append({"start": i, "length": m})
            reach = i + m
    return out


def check_ngram(encoded: Sequence[np.ndarray], n: int, unit: str) -> None:
    longest = max((len(ids) for ids in encoded), default=0)
    if longest < n:
        raise InputError(
            f"ngram {n} is larger than every item (the longest has {longest} {unit}); lower --ngram"
        )


def _capped_longest(index: CorpusIndex, encoded: Sequence[np.ndarray], n: int) -> list[np.ndarray]:
    """Per item, per position i: min(longest match from i, n), all items searched together.

    The window at i is the item's next n tokens (fewer at its end), so ``== n`` marks a
    found n-gram and the maximum is the item's longest match whenever it is below n.
    """
    rows = [len(ids) for ids in encoded]
    out: list[np.ndarray] = []
    start = 0
    while start < len(encoded):
        stop, size = start, 0
        while stop < len(encoded) and (stop == start or size + rows[stop] * n <= KEYS_PER_BATCH):
            size += rows[stop] * n
            stop += 1
        keys, lengths = _windows(encoded[start:stop], n)
        matched = index.match_keys(keys, lengths)
        at = 0
        for k in rows[start:stop]:
            out.append(matched[at : at + k])
            at += k
        start = stop
    return out


def _windows(encoded: Sequence[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, n) keys: every position's next n tokens (-1 past the item's end), (K,) lengths."""
    keys, lengths = [], []
    for ids in encoded:
        padded = np.concatenate([ids, np.full(n - 1, -1, dtype=np.int64)])
        keys.append(np.lib.stride_tricks.sliding_window_view(padded, n)[: len(ids)])
        lengths.append(np.minimum(n, len(ids) - np.arange(len(ids))))
    if not keys:
        return np.zeros((0, n), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(keys), np.concatenate(lengths)


def _top_docs(
    index: CorpusIndex, ids: list[int], spans: list[tuple[int, int]], limit: int
) -> list[str]:
    """The documents holding the item's maximal matches, most tokens matched first."""
    if limit <= 0:
        return []
    tokens: Counter[int] = Counter()
    for start, length in spans:
        for d in {d for d, _ in index.locate(ids[start : start + length], limit=limit)}:
            tokens[d] += length
    return [index.doc_id(d) for d, _ in tokens.most_common(limit)]


def as_items(
    items: Sequence[BenchmarkItem | str | dict], *, separator: str = " "
) -> list[BenchmarkItem]:
    """Benchmark items from texts, dicts (checked as the file's lines are) or items."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, BenchmarkItem):
            out.append(item)
        elif isinstance(item, str):
            out.append(_item({"text": item}, str(i), separator, where=f"items[{i}]"))
        elif isinstance(item, dict):
            out.append(_item(item, str(i), separator, where=f"items[{i}]"))
        else:
            raise InputError(
                f"items[{i}]: a benchmark item is a str or a dict, got {type(item).__name__}"
            )
    if not out:
        raise InputError("no benchmark items")
    return out


def read_benchmark(path: str, *, separator: str = " ") -> list[BenchmarkItem]:
    """A benchmark JSONL file; a line without text, or with a non-string field, names file:line."""
    if not str(path).endswith(".jsonl"):
        raise InputError(
            "a benchmark is a .jsonl file ('id', 'text' or 'question', 'answer')", path=path
        )
    items = [
        _item(obj, f"{Path(path).stem}:{line}", separator, path=path, line=line)
        for line, obj in jsonl_objects(path, what="benchmark")
    ]
    if not items:
        raise InputError("the benchmark holds no items", path=path)
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise InputError(f"item id '{item.id}' occurs twice", path=path)
        seen.add(item.id)
    return items


def _item(
    obj: dict,
    fallback_id: str,
    separator: str,
    *,
    path: str | None = None,
    line: int | None = None,
    where: str | None = None,
) -> BenchmarkItem:
    def bad(message: str) -> InputError:
        return InputError(f"{where}: {message}" if where else message, path=path, line=line)

    for key in ("text", "question", "answer"):
        if key in obj and not isinstance(obj[key], str):
            raise bad(f"'{key}' must be a string, got {type(obj[key]).__name__}")
    answer = obj.get("answer")
    if answer is not None and not answer.strip():
        raise bad("empty 'answer'")
    question: str = obj.get("question") or ""
    text: str = obj.get("text") or ""
    if not text.strip() and not question.strip():
        raise bad("no text: give a 'text' or a 'question'")
    prompt = question if question.strip() else text
    checked = text if text.strip() else question + (separator + answer if answer else "")
    rid = obj.get("id")
    return BenchmarkItem(str(rid) if rid is not None else fallback_id, checked, prompt, answer)


@dataclass
class ContaminationOutcome:
    out_dir: Path
    results: dict
    rows: list[ItemContamination]


def run_contamination(config: ContaminationConfig, *, progress=None) -> ContaminationOutcome:
    """Look every item up, score the model on dirty vs clean items (with ``config.model``),
    write the run dir (every input checked before it is written).
    """
    t0 = time.perf_counter()
    items = read_benchmark(config.benchmark, separator=config.answer_separator)
    index = CorpusIndex.load(config.index)
    model = _load_model(config, config.model) if config.model else None
    answered = [i for i, it in enumerate(items) if it.answer is not None]
    if model is not None and not answered:
        raise InputError(
            "--model needs items with an 'answer'; none has one", path=config.benchmark
        )
    if model is not None:
        prompts = _answer_ids(model, [items[i] for i in answered], config.answer_separator)
    if progress:
        progress("looking up", 0, len(items))
    rows = find_contaminated(
        index, items, ngram=config.ngram, threshold=config.threshold, doc_limit=config.docs
    )
    if progress:
        progress("looking up", len(items), len(items))
    t_look = time.perf_counter()
    n = config.ngram or default_ngram(index)
    summary = summarize(rows, threshold=config.threshold, ngram=n, unit=index.unit)
    columns: dict[str, list] = {
        k: [getattr(r, k) for r in rows] for k in ItemContamination.__dataclass_fields__
    }
    answers: dict[str, Any] | None = None
    if model is not None:
        correct, nll = answer_scores(model, prompts, batch_size=config.batch_size)
        dirty = np.array([rows[i].contaminated for i in answered])
        answers = compare_dirty_clean(
            correct, nll, dirty, n_bootstrap=config.n_bootstrap, seed=config.seed
        )
        columns["correct"] = [None] * len(items)
        columns["answer_nll"] = [None] * len(items)
        for k, i in enumerate(answered):
            columns["correct"][i] = bool(correct[k])
            columns["answer_nll"][i] = float(nll[k])
    t_model = time.perf_counter()

    run = rs.RunDir.begin(config.out, "contamination", config)
    run.write_scores(columns)
    results = {
        **run.header({"target": model} if model is not None else {}),
        "index": {**index.describe(), "unit": index.unit},
        "data": {"path": config.benchmark, "items": len(items), "with_answer": len(answered)},
        "contamination": summary,
        "answers": answers,
        "timings_s": {
            "lookup": t_look - t0,
            "model": t_model - t_look,
            "total": time.perf_counter() - t0,
        },
    }
    if summary["too_short"]:
        results["notes"].append(
            f"{summary['too_short']} item(s) shorter than {n} {index.unit} have no n-grams: never "
            "contaminated, left out of the contaminated share"
        )
    render = None
    if config.report:
        from memaudit.report.contamination import write_contamination_report

        render = partial(write_contamination_report, rows=[asdict(r) for r in rows])
    run.finish(results, render)
    return ContaminationOutcome(run.path, results, rows)


def summarize(
    rows: Sequence[ItemContamination], *, threshold: float, ngram: int, unit: str
) -> dict:
    """The contaminated share of the items with n-grams, with its 95% Wilson interval."""
    eligible = [r for r in rows if r.ngrams]
    dirty = sum(r.contaminated for r in eligible)
    low, high = wilson_interval(dirty, len(eligible))
    shares = np.array([r.share for r in eligible])
    return {
        "ngram": ngram,
        "unit": unit,
        "threshold": threshold,
        "rule": (
            f"contaminated: >= {threshold:g} of the item's {ngram}-grams (and at least one) "
            "occur in the corpus"
        ),
        "items": len(rows),
        "eligible": len(eligible),
        "too_short": len(rows) - len(eligible),
        "contaminated": dirty,
        "contaminated_share": {
            "value": dirty / len(eligible) if eligible else math.nan,
            "ci": [low, high],
        },
        "with_any_ngram": sum(r.found > 0 for r in eligible),
        "mean_share": float(shares.mean()) if len(shares) else math.nan,
        "longest_max": max((r.longest for r in rows), default=0),
    }


def _load_model(config: ContaminationConfig, path: str):
    from memaudit.models.hf import LoadOptions, load_causal_lm

    return load_causal_lm(
        path,
        LoadOptions(
            dtype=config.dtype, device=config.device, trust_remote_code=config.trust_remote_code
        ),
    )


def _answer_ids(
    model, items: Sequence[BenchmarkItem], separator: str
) -> list[tuple[list[int], int]]:
    """(prompt + answer token ids, answer length) per item; the prompt is cut from the left to
    fit the context. An answer that does not fit is an error, before any output.
    """
    prompts = model.encode([it.prompt for it in items])
    answers = model.tokenizer(
        [separator + (it.answer or "") for it in items], add_special_tokens=False, verbose=False
    )["input_ids"]
    out = []
    for it, p, a in zip(items, prompts, answers):
        if not a or len(a) >= model.max_length:
            raise InputError(
                f"item '{it.id}': its answer has {len(a)} tokens; the model's context is "
                f"{model.max_length}"
            )
        whole = (list(p) + list(a))[-model.max_length :]
        out.append((whole, len(a)))
    return out


def answer_scores(
    model, prompts: Sequence[tuple[list[int], int]], *, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """(Q,) greedy exact match and (Q,) mean NLL per answer token, from one teacher-forced
    pass over prompt + answer.
    """
    from memaudit.scoring.engine import ScoreSettings, score_texts

    ids = [p for p, _ in prompts]
    texts = [" ".join(map(str, p)) for p in ids]  # the cache is off: only the key of each row
    settings = ScoreSettings(max_batch_size=batch_size)
    scores, _ = score_texts(model, texts, settings, token_ids=ids)
    correct = np.zeros(len(ids), dtype=bool)
    nll = np.zeros(len(ids))
    for k, (_, m) in enumerate(prompts):
        t = scores.text(k)
        correct[k] = bool(t.is_argmax[-m:].all())
        nll[k] = -float(t.logp[-m:].mean(dtype=np.float64))
    return correct, nll


def compare_dirty_clean(
    correct: np.ndarray, nll: np.ndarray, dirty: np.ndarray, *, n_bootstrap: int, seed: int
) -> dict:
    """Accuracy (Wilson CI) and answer NLL (bootstrap CI) per group, and dirty - clean (bootstrap
    CI that resamples each group).
    """
    out: dict[str, Any] = {}
    for name, mask in (("dirty", dirty), ("clean", ~dirty)):
        k, n = int(correct[mask].sum()), int(mask.sum())
        group: dict[str, Any] = {
            "items": n,
            "accuracy": {"value": k / n if n else math.nan, "ci": list(wilson_interval(k, n))},
        }
        if n:
            e = cluster_bootstrap_mean(nll[mask], np.arange(n), n_bootstrap=n_bootstrap, seed=seed)
            group["answer_nll"] = {"value": e.value, "ci": [e.ci_low, e.ci_high]}
        else:
            group["answer_nll"] = {"value": math.nan, "ci": [math.nan, math.nan]}
        out[name] = group
    both = dirty.any() and (~dirty).any()
    for key, values in (("accuracy", correct.astype(float)), ("answer_nll", nll)):
        if both:
            e = bootstrap_difference(
                values[dirty], values[~dirty], n_bootstrap=n_bootstrap, seed=seed
            )
            out[f"{key}_difference"] = {"value": e.value, "ci": [e.ci_low, e.ci_high]}
        else:
            out[f"{key}_difference"] = {"value": math.nan, "ci": [math.nan, math.nan]}
    out["note"] = (
        "dirty - clean; a positive accuracy difference (negative NLL difference) is what "
        "contamination inflating the score looks like"
        if both
        else "no difference: every answered item is in one group"
    )
    return out
