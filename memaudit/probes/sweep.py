"""``memaudit probe recall-sweep``: MQAR recall against recurrent state, one model per cell.

A cell is one (arch, d_model, state): a ``ZooLM`` trained on MQAR, then evaluated on MQAR
over lengths x pairs. Training recipe (the same for every cell, so cells differ only in the
model): the mix of every (length, pairs) of the evaluated grid that fits (4 x pairs <=
length), step ``s`` drawing a batch of task ``s mod mix`` (``recall.mqar_batch``), AdamW at a
constant learning rate, loss at the query keys only (``recall.fit_mqar``); the evaluation draws
other sequences of the same tasks (seeds offset by ``EVAL_SEED``). Zoology trains on a mix and
evaluates a grid the same way; it also evaluates beyond the training lengths, which this
sweep's ``--lengths`` can do by training on a grid (``--train-lengths``) shorter than it.

Cells run in parallel worker processes (spawned, one torch thread each) and are cached in the
run dir, ``cells/<arch>-d<D>-s<state>-<hash>/``: the trained model (``model/``, written by
``save_zoo_model``) and its evaluation (``eval-<hash>.json``, written last). A rerun, or a
killed sweep run again, trains only the cells without a model and evaluates only the cells
without that evaluation; one thread and seeded data and initialisation make a cell's numbers
the same wherever and whenever it ran. A cell killed mid-training starts again from step 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from memaudit.errors import InputError

from .config import RecallSweepConfig

EVAL_SEED = 1 << 40  # evaluation sequences are drawn from seeds no training step uses
RECIPE = 2  # the training recipe's version (2: the curriculum): part of every cell's cache key


@dataclass(frozen=True)
class Cell:
    arch: str
    d_model: int
    state: int | None

    @property
    def label(self) -> str:
        return f"{self.arch}-d{self.d_model}-s{'default' if self.state is None else self.state}"


def sweep_cells(config: RecallSweepConfig) -> list[Cell]:
    """Every (arch, d_model, state) of the sweep: each arch at its default state, or at each of
    the states ``--states`` gives it.
    """
    states = config.states_of()
    return [
        Cell(arch, d, s) for arch in config.archs for d in config.d_models for s in states[arch]
    ]


def training_mix(config: RecallSweepConfig) -> list[tuple[int, int]]:
    """(length, pairs) of every training task, shortest first."""
    lengths = config.train_lengths or config.lengths
    pairs = config.train_pairs or config.pairs
    return [(L, D) for L in sorted(lengths) for D in sorted(pairs) if 4 * D <= L]


def train_settings(config: RecallSweepConfig) -> dict:
    """What decides a cell's trained model, besides the cell itself."""
    return {
        "vocab": config.vocab,
        "n_layers": config.n_layers,
        "max_len": max([*config.lengths, *(config.train_lengths or ())]),
        "mix": training_mix(config),
        "layout": config.layout,
        "alpha": config.alpha,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "seed": config.seed,
    }


def eval_settings(config: RecallSweepConfig) -> dict:
    """What decides a cell's evaluation of its trained model."""
    return {
        "lengths": list(config.lengths),
        "pairs": list(config.pairs),
        "n": config.n,
        "seed": config.seed + EVAL_SEED,
    }


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def cell_dir(out: Path, cell: Cell, train: dict) -> Path:
    """One dir per cell, training settings, model config, zoo format and recipe version: a
    rerun with other settings, or after the block or the recipe changed, trains anew."""
    from dataclasses import asdict

    from .zoo.model import FORMAT
    from .zoo_train import zoo_config

    model = zoo_config(
        cell.arch, vocab=train["vocab"], d_model=cell.d_model, state=cell.state,
        n_layers=train["n_layers"], max_len=train["max_len"],
    )  # fmt: skip
    key = [cell.__dict__, train, asdict(model), FORMAT, RECIPE]
    return out / "cells" / f"{cell.label}-{digest(key)}"


def check_cells(config: RecallSweepConfig) -> list[Cell]:
    """Every cell's ``ZooConfig`` and every MQAR task built once: bad input fails here, before
    the run dir is written.
    """
    from .recall import MQAR
    from .zoo_train import zoo_config

    cells = sweep_cells(config)
    train = train_settings(config)
    for cell in cells:
        zoo_config(
            cell.arch,
            vocab=config.vocab,
            d_model=cell.d_model,
            state=cell.state,
            n_layers=config.n_layers,
            max_len=train["max_len"],
            flag="--archs" if cell.state is None else "--states",
        )
    if not grid_cells(config):
        raise InputError("--lengths x --pairs: no (length, pairs) with 4 x pairs <= length")
    if not train["mix"]:
        raise InputError(
            "--train-lengths x --train-pairs: no (length, pairs) with 4 x pairs <= length"
        )
    for L, D in [*train["mix"], *grid_cells(config)]:
        MQAR(config.vocab, L, D, layout=config.layout, alpha=config.alpha)
    return cells


def grid_cells(config: RecallSweepConfig) -> list[tuple[int, int]]:
    return [(L, D) for L in config.lengths for D in config.pairs if 4 * D <= L]


def run_cell(cell: Cell, train: dict, evaluation: dict, where: str) -> dict:
    """Train (unless its model is there) and evaluate (unless its evaluation is there) one cell.

    Returns the cell's result: training record, state floats per length, the grid, and
    ``trained`` / ``evaluated``: whether this call did the work.
    """
    from .recall import MQAR, mqar_grid
    from .zoo import load_zoo_model, save_zoo_model
    from .zoo_recall import ZooRecallModel
    from .zoo_train import fit_zoo_mqar, one_thread, zoo_config

    d = Path(where)
    result_file = d / f"eval-{digest(evaluation)}.json"
    if result_file.is_file():
        return {**json.loads(result_file.read_text()), "trained": False, "evaluated": False}
    record_file = d / "training.json"
    trained = not record_file.is_file()
    with one_thread():
        if trained:
            cfg = zoo_config(
                cell.arch,
                vocab=train["vocab"],
                d_model=cell.d_model,
                state=cell.state,
                n_layers=train["n_layers"],
                max_len=train["max_len"],
            )
            tasks = [
                MQAR(train["vocab"], L, D, layout=train["layout"], alpha=train["alpha"])
                for L, D in train["mix"]
            ]
            model, record = fit_zoo_mqar(
                cfg,
                tasks,
                steps=train["steps"],
                batch_size=train["batch_size"],
                lr=train["lr"],
                seed=train["seed"],
            )
            save_zoo_model(
                model, d / "model", extra={"task": "mqar-sweep", **train}, overwrite=True
            )
            _write_json(
                record_file, record
            )  # after the model: its presence means the model is whole
        else:
            record = json.loads(record_file.read_text())
            model = load_zoo_model(d / "model").eval()
        lm = ZooRecallModel(model)
        t0 = time.perf_counter()
        grid = mqar_grid(
            lm,
            evaluation["lengths"],
            evaluation["pairs"],
            vocab=train["vocab"],
            n=evaluation["n"],
            seed=evaluation["seed"],
            layout=train["layout"],
            alpha=train["alpha"],
            predict=lm.predictor(),
        )
        eval_seconds = time.perf_counter() - t0
    result = {
        "arch": cell.arch,
        "d_model": cell.d_model,
        "state": cell.state,
        "label": cell.label,
        "dir": str(d),
        "parameters": record["parameters"],
        "state_floats": {str(L): model.state_floats(L) for L in evaluation["lengths"]},
        "training": record,
        "grid": grid,
        "mean_accuracy": _mean([v for v in grid.values() if v is not None]),
        "eval_seconds": eval_seconds,
        "fingerprint": lm.fingerprint(),
    }
    _write_json(result_file, result)
    return {**result, "trained": trained, "evaluated": True}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _write_json(path: Path, obj: dict) -> None:
    from memaudit.io.atomic import write_text_atomic
    from memaudit.io.rundir import jsonable

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(jsonable(obj), indent=2) + "\n")


def run_cells(
    config: RecallSweepConfig, cells: list[Cell], out: Path, *, progress: Callable | None = None
) -> list[dict]:
    """Every cell's result, in the order of ``cells``: the ones not cached run in ``--workers``
    spawned processes (in this process when one worker or one cell is left).
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    train, evaluation = train_settings(config), eval_settings(config)
    where = {c: str(cell_dir(out, c, train)) for c in cells}
    results: dict[Cell, dict] = {}
    pending = []
    for c in cells:  # cached evaluations are read here: no worker starts for them
        f = Path(where[c]) / f"eval-{digest(evaluation)}.json"
        if f.is_file():
            results[c] = {**json.loads(f.read_text()), "trained": False, "evaluated": False}
        else:
            pending.append(c)
    workers = min(len(pending), config.workers or os.cpu_count() or 1)

    def report(c: Cell) -> None:
        if progress:
            r = results[c]
            progress(
                "training and evaluating cells",
                len(results),
                len(cells),
                f"{c.label}: {r['mean_accuracy']:.2f}",
            )

    if workers <= 1:
        for c in pending:
            results[c] = run_cell(c, train, evaluation, where[c])
            report(c)
    else:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(run_cell, c, train, evaluation, where[c]): c for c in pending}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                report(futures[fut])
    return [results[c] for c in cells]


def run_sweep(config: RecallSweepConfig, *, progress=None):
    """The sweep's run dir: results.json (every cell), scores.parquet (one row per cell x
    length x pairs), report.html.
    """
    from functools import partial

    from memaudit.io import rundir as rs

    t0 = time.perf_counter()
    config = config.resolved()
    cells = check_cells(config)
    run = rs.RunDir.begin(config.out, "probe recall-sweep", config)
    results_of = run_cells(config, cells, run.path, progress=progress)
    run.write_scores(score_columns(results_of, config))
    vocab = config.vocab
    results = {
        **run.header(),
        "recipe": {
            "train": train_settings(config),
            "eval": eval_settings(config),
            "optimizer": "AdamW, weight decay 0, constant learning rate, gradients clipped at 1",
        },
        "chance": 1 / (vocab - vocab // 2),
        "cells": results_of,
        "trained_cells": sum(r["trained"] for r in results_of),
        "timings_s": {"total": time.perf_counter() - t0},
    }
    render = None
    if config.report:
        from memaudit.report.zoo import write_zoo_report

        render = partial(write_zoo_report, lengths=list(config.lengths), pairs=list(config.pairs))
    run.finish(results, render)
    return run.path, results


def score_columns(results: list[dict], config: RecallSweepConfig) -> dict[str, list]:
    rows = [
        (r, L, D)
        for r in results
        for L in config.lengths
        for D in config.pairs
        if r["grid"][f"{L}x{D}"] is not None
    ]
    return {
        "arch": [r["arch"] for r, _, _ in rows],
        "d_model": [r["d_model"] for r, _, _ in rows],
        "state": [r["state"] for r, _, _ in rows],
        "length": [L for _, L, _ in rows],
        "pairs": [D for _, _, D in rows],
        "state_floats": [r["state_floats"][str(L)] for r, L, _ in rows],
        "accuracy": [r["grid"][f"{L}x{D}"] for r, L, D in rows],
        "train_tokens_per_s": [r["training"]["tokens_per_s"] for r, _, _ in rows],
    }
