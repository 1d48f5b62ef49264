"""``memaudit probe kk make`` / ``run``: puzzles to JSONL, and a model's accuracy, consistency
and LiMem.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.atomic import write_text_atomic
from memaudit.io.progress import Progress
from memaudit.io.texts import jsonl_objects
from memaudit.models.generation import greedy_generate
from memaudit.models.hf import LoadOptions, load_causal_lm

from .config import KKRunConfig
from .consistency import limem_with_ci
from .kk import (
    LOGIC_PERTURBATIONS,
    PERTURBATIONS,
    from_row,
    make_puzzles,
    parse_answer,
    render_puzzle,
    to_row,
)


def write_puzzles(
    path: str | Path, people: list[int], n: int, *, depth: int = 2, seed: int = 0
) -> Path:
    rows = [to_row(p) for p in make_puzzles(people, n, depth=depth, seed=seed)]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return Path(path)


def read_puzzles(path: str | Path) -> list:
    out = [from_row(row, where=f"{path}:{n}") for n, row in jsonl_objects(path, what="puzzle file")]
    if not out:
        raise InputError("no puzzles in this file", path=str(path))
    return out


def run_kk(config: KKRunConfig, *, progress=None) -> tuple[Path, dict]:
    t0 = time.perf_counter()
    puzzles = read_puzzles(config.data)
    model = load_causal_lm(config.model, LoadOptions(device=config.device))
    variants = {"original": puzzles}
    for kind in config.perturbations:
        rng = random.Random(f"{config.seed}-{kind}")
        variants[kind] = [PERTURBATIONS[kind](p, rng) for p in puzzles]
    run = rs.RunDir.begin(config.out, "probe kk run", config)
    out = run.path
    correct, outputs = {}, {}
    for name, ps in variants.items():
        correct[name], outputs[name] = answer_all(
            model,
            ps,
            config,
            progress=progress,
            stage=f"solving: {name}",
        )
    orig = correct["original"]
    summary = {
        kind: {
            **limem_with_ci(orig, correct[kind], n_bootstrap=config.n_bootstrap, seed=config.seed),
            "changes_answer": kind in LOGIC_PERTURBATIONS,
        }
        for kind in config.perturbations
    }
    by_people = {}
    for n_people in sorted({p.n for p in puzzles}):
        idx = [i for i, p in enumerate(puzzles) if p.n == n_people]
        by_people[n_people] = {
            kind: limem_with_ci(
                [orig[i] for i in idx],
                [correct[kind][i] for i in idx],
                n_bootstrap=200,
                seed=config.seed,
            )
            for kind in config.perturbations
        }
    columns = {"id": [p.meta.get("id") for p in puzzles], "people": [p.n for p in puzzles]}
    for name in variants:
        columns[f"{name}_correct"] = correct[name]
        columns[f"{name}_output"] = outputs[name]
    run.write_scores(columns)
    results = {
        **run.header({"target": model}),
        "data": {"path": config.data, "puzzles": len(puzzles), "skipped": []},
        "accuracy": sum(orig) / len(orig),
        "perturbations": summary,
        "by_people": by_people,
        "timings_s": {"total": time.perf_counter() - t0},
    }
    render = None
    if config.report:
        from memaudit.report import write_kk_report

        render = write_kk_report
    run.finish(results, render)
    return out, results


def answer_all(
    model, puzzles, config: KKRunConfig, *, progress: Progress | None = None, stage: str = "solving"
) -> tuple[list[bool], list[str]]:
    """Greedy answers to every puzzle, parsed and checked against its one solution."""
    from .kk import render_answer

    prompts = model.encode([render_puzzle(p) + "\nAnswer:" for p in puzzles])
    longest = max(map(len, model.encode([" " + render_answer(p) for p in puzzles])))
    room = model.max_length - max(len(x) for x in prompts)
    new = min(config.max_new_tokens or longest + 4, room)
    if new < 1:
        raise InputError(
            f"puzzles of {max(len(x) for x in prompts)} tokens leave no room to answer in the "
            f"model's context of {model.max_length}"
        )
    generated = greedy_generate(
        model, prompts, new, batch_size=config.batch_size, progress=progress, stage=stage
    )
    texts = [model.tokenizer.decode(g) for g in generated]
    return [parse_answer(t, p) == p.solution() for t, p in zip(texts, puzzles)], texts
