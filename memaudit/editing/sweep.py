"""``memaudit edit-sweep``: how each method holds up as more facts are written at once.

For every method and batch size ``B``, the first ``--edits-per-size`` edits are cut into
batches of ``B`` (one batch when ``B`` is larger); each batch is written into the original
model (restored from memory between batches, never read again from disk) and measured as
``edit-eval`` measures an edited model: efficacy, paraphrase, neighbourhood specificity,
fluency, exact extraction, over the edits of that batch. ROME writes a batch one edit after
another (sequential ROME); MEMIT and EMMET write it at once. The paper's finding at scale
(Gupta et al.): EMMET on par with MEMIT up to large batches, sequential ROME degrading.

Each finished (method, size) is kept in ``cells/<method>-x<B>-<key>.json`` (the key hashes
the model, the edits file and the settings): a stopped sweep run again measures only the
rest, to the same numbers. The key statistics of every layer any method edits are estimated
once (and cached, as ``memaudit edit`` does); each method edits its default layers
(``run.default_layers``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.atomic import write_text_atomic
from memaudit.models.anatomy import blocks
from memaudit.models.generation import greedy_generate
from memaudit.models.hf import LoadOptions, load_causal_lm

from .compute import TargetSettings
from .config import EditSweepConfig
from .evaluate import (
    general_nll,
    general_texts,
    measure_model,
    probes_of,
    proportion,
    summarise,
    target_len,
)
from .methods import EditSettings, apply_edits
from .requests import encode_edits, read_edits
from .run import check_layers, default_layers, key_statistics


def batches_of(n_edits: int, size: int, per_size: int) -> list[range]:
    """The batches measured at ``size``: consecutive, disjoint, covering the first
    ``max(per_size, size)`` edits (whole batches only).

    >>> batches_of(10, 4, 8)
    [range(0, 4), range(4, 8)]
    >>> batches_of(300, 256, 64)
    [range(0, 256)]
    """
    cover = min(n_edits, max(per_size, size))
    return [range(s, s + size) for s in range(0, cover - size + 1, size)]


def cell_key(config: EditSweepConfig, fingerprint: str) -> str:
    """What decides a (method, size)'s measures: the model, the input files' bytes and every
    setting but where the run goes and how its summary is bootstrapped."""
    settings = {k: v for k, v in config.to_dict().items()
                if k not in ("out", "overwrite", "report", "n_bootstrap")}  # fmt: skip
    h = hashlib.sha256(json.dumps([settings, fingerprint], sort_keys=True, default=str).encode())
    for path in (config.edits, config.general, config.covariance_corpus):
        if Path(path).is_file():  # a changed file never reads stale cells ('stdlib' is fixed)
            h.update(Path(path).read_bytes())
    return h.hexdigest()[:12]


def cell_file(out: Path, method: str, size: int, key: str) -> Path:
    return out / "cells" / f"{method}-x{size}-{key}.json"


def plan_end(plan: list[tuple[str, int, range]], method: str, size: int) -> int:
    """The end of the last batch of (method, size): when it is measured, the cell is done."""
    return max(b.stop for m, s, b in plan if (m, s) == (method, size))


def run_edit_sweep(config: EditSweepConfig, *, progress=None) -> tuple[Path, dict]:
    """The sweep's run dir: results.json (one entry per method x batch size), scores.parquet
    (one row per measured edit), report.html."""
    t0 = time.perf_counter()
    edits = read_edits(config.edits)
    if max(config.batch_sizes) > len(edits):
        raise InputError(
            f"--batch-sizes {max(config.batch_sizes)} needs that many edits; the file has "
            f"{len(edits)}",
            path=config.edits,
        )
    lm = load_causal_lm(config.model, LoadOptions(dtype="float32", device=config.device))
    n_layers = len(blocks(lm.model))
    layers = {m: default_layers(m, n_layers) for m in config.methods}
    for chosen in layers.values():
        check_layers(chosen, n_layers)
    probes = probes_of(lm.tokenizer, edits, config.edits)
    written = encode_edits(lm.tokenizer, edits, key_at=config.key_at, path=config.edits)
    texts = general_texts(config.general, config.general_texts, seed=config.seed)
    every = tuple(sorted({layer for chosen in layers.values() for layer in chosen}))
    moments, covariance = key_statistics(
        lm, every, corpus=config.covariance_corpus, tokens=config.covariance_tokens,
        cache_dir=config.cache_dir, seed=config.seed, progress=progress,
    )  # fmt: skip
    run = rs.RunDir.begin(config.out, "edit-sweep", config)
    answers = [
        greedy_generate(lm, p.neighbours, target_len(p)) if p.neighbours else [] for p in probes
    ]
    base_rows = measure_model(lm, probes, answers)
    base_general = general_nll(lm, texts)
    original = copy.deepcopy(lm.model.state_dict())
    plan = [
        (m, b, batch)
        for m in config.methods
        for b in config.batch_sizes
        for batch in batches_of(len(edits), b, config.edits_per_size)
    ]
    order = {mb: i for i, mb in enumerate(dict.fromkeys((m, b) for m, b, _ in plan))}
    cells: dict[tuple[str, int], dict] = {}
    key = cell_key(config, lm.fingerprint)
    for method, size in dict.fromkeys((m, b) for m, b, _ in plan):
        done = cell_file(run.path, method, size, key)
        if done.is_file():  # measured by a run that was stopped after it
            cells[method, size] = json.loads(done.read_text())
    table: list[dict] = []
    for step, (method, size, batch) in enumerate(plan):
        if (method, size) in cells and cells[method, size].get("complete"):
            continue
        settings = EditSettings(
            method=method, layers=layers[method], preservation_weight=config.preservation_weight,
            emmet_ridge=config.emmet_ridge, target=TargetSettings(),
        )  # fmt: skip
        lm.model.load_state_dict(original)
        began = time.perf_counter()
        apply_edits(lm.model, [written[i] for i in batch], moments, settings)
        seconds = time.perf_counter() - began
        rows = measure_model(lm, [probes[i] for i in batch], [answers[i] for i in batch])
        fluency = general_nll(lm, texts) - base_general
        cell = cells.setdefault((method, size), {"rows": [], "base": [], "fluency": [], "s": 0.0})
        cell["rows"] += [{**r, "batch": batch.start // size} for r in rows]
        cell["base"] += [base_rows[i] for i in batch]
        cell["fluency"].append(fluency.tolist())
        cell["s"] += seconds
        if batch.stop == plan_end(plan, method, size):
            cell["complete"] = True
            write_text_atomic(cell_file(run.path, method, size, key), json.dumps(cell))
        if progress:
            progress("editing and measuring", step + 1, len(plan), f"{method} x{size}")
    lm.model.load_state_dict(original)
    summary = []
    for (method, size), cell in sorted(cells.items(), key=lambda kv: order[kv[0]]):
        table += [{"method": method, "batch_size": size, **r} for r in cell["rows"]]
        fluency = np.mean(cell["fluency"], axis=0)  # per text, over the batches
        m = summarise(
            cell["rows"], cell["base"], fluency, n_bootstrap=config.n_bootstrap, seed=config.seed
        )
        n = len(cell["rows"])
        summary.append({"method": method, "batch_size": size, "edits": n,
                        "batches": n // size, "layers": list(layers[method]),
                        "seconds_per_edit": cell["s"] / n, **m})  # fmt: skip
    scalar = ("method", "batch_size", "batch", "id", "new_nll", "true_nll", "efficacy",
              "paraphrase", "extracted")  # fmt: skip
    run.write_scores({k: [r[k] for r in table] for k in scalar})
    results = {
        **run.header({"model": lm}),
        "data": {"edits": len(edits), "general_texts": len(texts)},
        "covariance": covariance,
        "original": {
            "efficacy": proportion([r["efficacy"] for r in base_rows if r["efficacy"] is not None])
        },
        "sweep": summary,
        "timings_s": {"total": time.perf_counter() - t0},
    }
    render = None
    if config.report:
        from memaudit.report.editing import write_edit_sweep_report

        render = write_edit_sweep_report
    run.finish(results, render)
    return run.path, results
