"""``memaudit overlap``: how much of what a model writes is copied verbatim from its training
corpus?

The model continues each prompt (greedy, or sampled at a temperature); each continuation is
looked up in the corpus index: the share of its tokens inside spans of at least
``min_tokens`` tokens found verbatim in the corpus, those spans with their source
documents, and the longest span. The regurgitation measure of free generation
(as in OLMoTrace / infini-gram).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.metrics import cluster_bootstrap_mean
from memaudit.models.hf import LoadOptions
from memaudit.models.sources import FILES, Sources
from memaudit.scoring.distributed import LocalEngine, RayEngine, open_engine

from .config import OverlapConfig
from .duplication import open_index_for

THRESHOLDS = (8, 16, 32, 64)  # coverage is also reported at these span lengths
TOP_SOURCES = 20


@dataclass
class OverlapOutcome:
    out_dir: Path
    results: dict


def run_overlap(
    config: OverlapConfig, *, progress=None, sources: Sources = FILES
) -> OverlapOutcome:
    """Generate from every prompt, measure verbatim overlap with the corpus, write the run dir.

    ``sources``: the prompts and model the API was given by name (the command line: files).
    """
    t0 = time.perf_counter()
    data = sources.read_texts(config.prompts, skip_invalid=config.skip_invalid)
    model = sources.load_causal_lm(
        config.model,
        LoadOptions(
            dtype=config.dtype,
            device=config.device,
            trust_remote_code=config.trust_remote_code,
            device_map=config.device_map,
        ),
        adapter=config.adapter,
    )
    index = open_index_for(config.index, model)
    room = model.max_length - config.max_new_tokens
    if room < 1:
        raise InputError(
            f"max_new_tokens {config.max_new_tokens} leaves no room for a prompt in the model's "
            f"context of {model.max_length}"
        )
    prompts = [
        ids[-room:] or [model.tokenizer.eos_token_id or 0]
        for ids in model.encode([r.text for r in data.records])
    ]

    engine = open_engine(  # a Ray address that does not answer fails here, before any work
        config.engine,
        address=config.ray_address,
        workers=config.ray_workers,
        device=config.device,
        trust_remote_code=config.trust_remote_code,
    )
    with engine:
        generated, rows = _generate(engine, model, prompts, config, progress), []
    t_gen = time.perf_counter()
    for n, (prompt_row, gen) in enumerate(generated):
        lengths = index.longest(
            gen
        )  # once: the spans and the coverage at every threshold come from it
        found = index.overlap_of(
            list(map(int, gen)), lengths, min_tokens=config.min_tokens, doc_limit=config.doc_limit
        )
        rows.append((prompt_row, gen, found, lengths))
        if progress:
            progress("looking up", n + 1, len(generated))
    t_look = time.perf_counter()

    summary = summarize(rows, index, config)
    columns = _columns(rows, data.records, model, index)
    run = rs.RunDir.begin(config.out, "overlap", config)
    out = run.path
    run.write_scores(columns)
    results = {
        **run.header({"target": model}),
        "index": index.describe(),
        "data": {
            "path": config.prompts,
            "prompts": len(data.records),
            "generations": len(rows),
            "skipped": [s.to_dict() for s in data.skipped],
        },
        "overlap": summary,
        "engine": engine.describe(),
        "timings_s": {
            "generate": t_gen - t0,
            "lookup": t_look - t_gen,
            "total": time.perf_counter() - t0,
        },
    }
    render = None
    if config.report:
        from memaudit.report import write_overlap_report

        render = partial(write_overlap_report, columns=columns, highlights=_highlights(rows, model))
    run.finish(results, render)
    return OverlapOutcome(out, results)


def _generate(
    engine: LocalEngine | RayEngine,
    model,
    prompts: list[list[int]],
    config: OverlapConfig,
    progress,
) -> list[tuple[int, list[int]]]:
    """(prompt row, continuation) pairs: one per prompt when greedy, ``samples`` per prompt when
    sampled (prompt ``i`` seeded by ``seed + i``).
    """
    if config.temperature == 0:
        return list(
            enumerate(
                engine.greedy_generate(
                    model,
                    prompts,
                    config.max_new_tokens,
                    batch_size=config.batch_size,
                    progress=progress,
                )
            )
        )
    sampled = engine.sample_prompts(
        model,
        prompts,
        config.samples,
        config.max_new_tokens,
        temperature=config.temperature,
        seeds=[config.seed + i for i in range(len(prompts))],
        batch_size=config.batch_size,
        progress=progress,
    )
    return [(i, c) for i, conts in enumerate(sampled) for c in conts]


def coverage_at(lengths: list[int], n: int) -> float:
    """Share of positions inside some span of at least ``n`` tokens, from the longest match at each
    position.

    >>> coverage_at([3, 2, 1, 0, 0], 2)
    0.6
    """
    covered = np.zeros(len(lengths), dtype=bool)
    for i, m in enumerate(lengths):
        if m >= n:
            covered[i : i + m] = True
    return float(covered.mean()) if len(lengths) else 0.0


def summarize(rows, index, config: OverlapConfig) -> dict:
    """Coverage, share of generations with a copy, longest match, and top sources.

    The CIs resample prompts, not generations: the ``--samples`` continuations of one
    prompt are one cluster (with one generation per prompt this is the plain bootstrap).
    """
    coverage = np.array([found["coverage"] for _, _, found, _ in rows])
    has_copy = np.array([bool(found["spans"]) for _, _, found, _ in rows], dtype=float)
    prompts = np.array([p for p, *_ in rows])
    longest = np.array([found["longest"] for _, _, found, _ in rows])
    nan_ci = {"value": float("nan"), "ci": [float("nan")] * 2}

    def by_prompt(values: np.ndarray) -> dict:
        if not len(values):
            return nan_ci
        e = cluster_bootstrap_mean(
            values, prompts, n_bootstrap=config.n_bootstrap, seed=config.seed
        )
        return {"value": e.value, "ci": [e.ci_low, e.ci_high]}

    sources: Counter[str] = Counter()
    for _, _, found, _ in rows:
        for span in found["spans"]:
            for d in span["docs"]:
                sources[d] += span["length"]
    return {
        "min_tokens": config.min_tokens,
        "mean_coverage": by_prompt(coverage),
        "share_with_copy": by_prompt(has_copy),
        "ci_resamples": "prompts",
        "longest": {
            "max": int(longest.max(initial=0)),
            "median": float(np.median(longest)) if len(longest) else float("nan"),
        },
        "coverage_by_span_length": {
            str(n): float(np.mean([coverage_at(lengths, n) for *_, lengths in rows]))
            for n in THRESHOLDS
        },
        "top_sources": [
            {"doc": d, "source": index.doc_id(d), "copied_tokens": t}
            for d, t in sources.most_common(TOP_SOURCES)
        ],
    }


def _columns(rows, records, model, index) -> dict[str, list]:
    decode = model.tokenizer.decode
    return {
        "id": [records[p].id for p, *_ in rows],
        "prompt": [records[p].text for p, *_ in rows],
        "generated": [decode(g) for _, g, *_ in rows],
        "generated_ids": [list(map(int, g)) for _, g, *_ in rows],
        "coverage": [f["coverage"] for _, _, f, _ in rows],
        "longest": [f["longest"] for _, _, f, _ in rows],
        "n_spans": [len(f["spans"]) for _, _, f, _ in rows],
        "sources": [
            sorted({index.doc_id(d) for s in f["spans"] for d in s["docs"]}) for _, _, f, _ in rows
        ],
        "spans": [f["spans"] for _, _, f, _ in rows],
    }


def _highlights(rows, model, top: int = 30) -> list[dict]:
    """The most-copied generations as (text, copied?) segments for the report."""
    decode = model.tokenizer.decode
    order = sorted(range(len(rows)), key=lambda i: -rows[i][2]["coverage"])[:top]
    out = []
    for i in order:
        _, gen, found, _ = rows[i]
        if not found["spans"]:
            break
        mask = np.zeros(len(gen), dtype=bool)
        for s in found["spans"]:
            mask[s["start"] : s["start"] + s["length"]] = True
        segments, start = [], 0
        for j in range(1, len(gen) + 1):
            if j == len(gen) or mask[j] != mask[start]:
                segments.append({"text": decode(gen[start:j]), "copied": bool(mask[start])})
                start = j
        out.append(
            {
                "row": i,
                "coverage": found["coverage"],
                "longest": found["longest"],
                "segments": segments,
            }
        )
    return out
