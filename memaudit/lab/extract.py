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
from memaudit.io.texts import Skipped, read_texts
from memaudit.models.generation import greedy_generate
from memaudit.models.hf import LoadOptions, load_causal_lm
from memaudit.scoring.cache import resolve_cache_root
from memaudit.scoring.engine import score_texts

from .config import ExtractConfig
from .verbatim import compare, extraction_strength, rates

MISSING = "(missing)"


@dataclass
class ExtractOutcome:
    out_dir: Path
    results: dict


def run_extract(config: ExtractConfig, *, progress: Progress | None = None) -> ExtractOutcome:
    """Run extraction on every text and write the run dir (results.json last)."""
    t0 = time.perf_counter()
    data = read_texts(config.data, skip_invalid=config.skip_invalid)
    model = load_causal_lm(
        config.model,
        LoadOptions(
            dtype=config.dtype,
            device=config.device,
            trust_remote_code=config.trust_remote_code,
            bos=config.bos,
        ),
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
    for r, toks in zip(data.records, model.encode([r.text for r in data.records])):
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

    run = rs.RunDir.begin(config.out, "extract", config)
    out = run.path
    generated = greedy_generate(
        model, [t[:k] for t in ids], m, batch_size=config.batch_size, progress=progress
    )
    matches = [compare(g, t[k : k + m]) for g, t in zip(generated, ids)]
    scores, score_stats = score_texts(
        model,
        [r.text for r in records],
        cache_root=resolve_cache_root(config.cache_dir, config.no_cache),
        token_ids=ids,
        progress=progress,
        stage="scoring",
    )
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
        "timings_s": {"total": time.perf_counter() - t0},
    }
    render = None
    if config.report:
        from memaudit.report import write_extract_report

        render = partial(write_extract_report, columns=columns)
    run.finish(results, render)
    return ExtractOutcome(out, results)


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
