"""``memaudit extract``: prompt with each text's first K tokens, decode M greedily, compare."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from memaudit.errors import InputError
from memaudit.index.duplication import (
    bucket_order,
    corpus_counts,
    duplication_bucket,
    open_index_for,
)
from memaudit.io import rundir as rs
from memaudit.io.progress import Progress
from memaudit.io.texts import Skipped
from memaudit.models.heads import head_ids
from memaudit.models.hf import LoadOptions
from memaudit.models.sources import FILES, Sources
from memaudit.scoring.cache import resolve_cache_root
from memaudit.scoring.distributed import open_engine
from memaudit.scoring.engine import ScoreStats, score_texts
from memaudit.scoring.tokenscores import TokenScores

from .config import ExtractConfig
from .verbatim import compare, extraction_strength, rates

MISSING = "(missing)"


@dataclass
class ExtractOutcome:
    out_dir: Path
    results: dict


def run_extract(
    config: ExtractConfig, *, progress: Progress | None = None, sources: Sources = FILES
) -> ExtractOutcome:
    """Run extraction on every text and write the run dir (results.json last).

    ``sources``: the texts and model the API was given by name (the command line: files).
    """
    t0 = time.perf_counter()
    data = sources.read_texts(config.data, skip_invalid=config.skip_invalid)
    model = sources.load_causal_lm(
        config.model,
        LoadOptions(
            dtype=config.dtype,
            device=config.device,
            trust_remote_code=config.trust_remote_code,
            device_map=config.device_map,
            bos=config.bos,
        ),
        adapter=config.adapter,
    )
    index = (
        open_index_for(config.index, model) if config.index else None
    )  # a wrong index fails before any work
    k, m = config.prefix_tokens, config.suffix_tokens
    if k + m > model.max_length:
        raise InputError(
            f"prefix + suffix = {k + m} tokens exceeds the model's context of {model.max_length}"
        )
    records, ids, skipped = [], [], list(data.skipped)
    # one token past the window tells whether the window is the whole text
    heads = head_ids(model, [r.text for r in data.records], k + m + 1)
    for r, toks in zip(data.records, heads):
        if len(toks) >= k + m:
            records.append(r)
            ids.append(toks)
            continue
        reason = f"text has {len(toks)} tokens; prefix + suffix = {k + m} needed"
        if not config.skip_invalid:
            raise InputError(reason, path=r.path, line=r.line)
        skipped.append(Skipped(r.path or r.id, r.line, reason))
    if not records:
        raise InputError(f"no text is long enough for {k} + {m} tokens", path=config.data)
    if config.group_by and not any(config.group_by in r.meta for r in records):
        raise InputError(
            f"no record has the field '{config.group_by}' to group by", path=config.data
        )

    engine = open_engine(  # a Ray address that does not answer fails here, before the run dir
        config.engine,
        address=config.ray_address,
        workers=config.ray_workers,
        device=config.device,
        trust_remote_code=config.trust_remote_code,
    )
    run = rs.RunDir.begin(config.out, "extract", config)
    out = run.path
    with engine:
        generated = engine.greedy_generate(
            model, [t[:k] for t in ids], m, batch_size=config.batch_size, progress=progress
        )
        scores, score_stats = _score_windows(
            model,
            [r.text for r in records],
            ids,
            k + m,
            cache_root=resolve_cache_root(config.cache_dir, config.no_cache),
            progress=progress,
        )
    matches = [compare(g, t[k : k + m]) for g, t in zip(generated, ids)]
    ids = [t[: k + m] for t in ids]
    strength = extraction_strength(scores)

    groups = (
        [str(r.meta.get(config.group_by, MISSING)) for r in records] if config.group_by else None
    )
    summary = {"overall": rates(matches, strength)}
    if groups is not None:
        summary["by_group"] = _grouped_rates(
            matches, strength, groups, sorted(set(groups), key=_sort_key)
        )
    duplication: dict[str, list] = {}
    if index is not None:
        counts = corpus_counts(index, ids)
        buckets = [duplication_bucket(int(c)) for c in counts]
        summary["by_duplication"] = _grouped_rates(
            matches, strength, buckets, bucket_order(buckets)
        )
        duplication = {"corpus_count": counts.tolist(), "duplication": buckets}
    decode = model.tokenizer.decode
    columns: dict[str, Any] = {
        "id": [r.id for r in records],
        "source": [r.where for r in records],
        **({config.group_by: groups} if config.group_by and groups is not None else {}),
        **duplication,
        **{
            f: [getattr(mt, f) for mt in matches]
            for f in ("exact", "token_match", "loose", "longest_prefix")
        },
        "extraction_strength": strength.tolist(),
        "prefix": [decode(t[:k]) for t in ids],
        "generated": [decode(g) for g in generated],
        "true_suffix": [decode(t[k : k + m]) for t in ids],
    }
    run.write_scores(columns)
    results = {
        **run.header({"target": model}),
        "data": {"path": config.data, "n": len(records), "skipped": [s.to_dict() for s in skipped]},
        "rates": summary,
        **({"index": index.describe()} if index is not None else {}),
        "scoring": asdict(score_stats),
        "engine": engine.describe(),
        "timings_s": {"total": time.perf_counter() - t0},
    }
    render = None
    if config.report:
        from memaudit.report import write_extract_report

        render = partial(write_extract_report, columns=columns)
    run.finish(results, render)
    return ExtractOutcome(out, results)


def _score_windows(
    model, texts: list[str], heads: list[list[int]], window: int, *, cache_root, progress
) -> tuple[TokenScores, ScoreStats]:
    """Score each text's first ``window`` tokens (``heads`` hold one more when the text goes on).

    A whole text is scored through the cache as any command scores it; a cut one is scored
    without it, since the cache keeps a text's scores under the text's hash and these cover
    only its head.
    """
    cut = [len(h) > window for h in heads]
    parts: dict[bool, tuple[list[int], TokenScores]] = {}
    stats = ScoreStats(texts=len(texts))
    for is_cut in (False, True):
        rows = [i for i, c in enumerate(cut) if c == is_cut]
        if not rows:
            continue
        scores, part_stats = score_texts(
            model,
            [texts[i] for i in rows],
            cache_root=None if is_cut else cache_root,
            token_ids=[heads[i][:window] for i in rows],
            progress=progress,
            stage="scoring",
        )
        stats.merge(part_stats)
        parts[is_cut] = (rows, scores)
    stats.texts = len(texts)
    by_row = {i: s for rows, scores in parts.values() for i, s in zip(rows, scores)}
    return TokenScores.from_texts([by_row[i] for i in range(len(texts))]), stats


def _grouped_rates(matches, strength, groups: list[str], order: list[str]) -> dict:
    return {
        g: rates(
            [mt for mt, gg in zip(matches, groups) if gg == g],
            [s for s, gg in zip(strength, groups) if gg == g],
        )
        for g in order
    }


def _sort_key(key: str):
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)
