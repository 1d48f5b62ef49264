"""``memaudit edit``: write facts into a copy of a model (ROME, MEMIT, EMMET)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from memaudit.editing.config import (
    EditConfig,
    EditEvalConfig,
    EditFactsConfig,
    EditSecretsConfig,
    EditSweepConfig,
)

from .common import StageBars, config_command, out_console

app = typer.Typer()


@config_command(app, "edit", EditConfig)
def edit(cfg: EditConfig) -> None:
    """Edit facts into a new model dir: each edit's subject key, at a block's MLP output
    projection, is made to write the value that gives its new target.

    rome rewrites one block, the edits one after another; memit and emmet write a batch over
    several blocks (the least-squares and the equality-constrained solution of the same
    preservation-memorization objective). The preserved keys' statistics are estimated once per
    model and layer over --covariance-corpus and cached. The original model is never written.
    """
    from memaudit.editing.run import EDIT_RECORD, run_edit

    with StageBars() as bars:
        path = run_edit(cfg, progress=bars)
    record = json.loads((path / EDIT_RECORD).read_text())
    passes = sum(s["forward_passes"] for s in record["covariance"]["layers"])
    out_console.print(
        f"{record['edits']['n']} edits with {cfg.method} at blocks {record['layers']} "
        f"(key statistics: {passes} forward passes)"
    )
    out_console.print(f"edited model: {path}")


@config_command(app, "edit-eval", EditEvalConfig)
def edit_eval(cfg: EditEvalConfig) -> None:
    """Did the edits take, and what else moved? Efficacy, paraphrases, neighbourhood
    specificity, fluency, exact extraction of the new targets and (with --controls) the loss
    attack on edited vs never-edited statements, for every edited model against the original.
    """
    from memaudit.editing.evaluate import run_edit_eval

    with StageBars() as bars:
        path, results = run_edit_eval(cfg, progress=bars)
    table = Table(title="Model editing evaluation")
    for col in ("model", "efficacy", "paraphrase", "specificity", "fluency ΔNLL", "extraction"):
        table.add_column(col)

    def cell(x) -> str:
        return "n/a" if not x or x.get("value") is None else f"{x['value']:.2f}"

    for name, m in results["edited"].items():
        table.add_row(
            name,
            *(cell(m[k]) for k in ("efficacy", "paraphrase", "specificity")),
            cell(m["fluency_nll_change"]),
            cell(m["extraction"]),
        )
    out_console.print(table)
    out_console.print(f"run: {path}")


@config_command(app, "edit-sweep", EditSweepConfig)
def edit_sweep(cfg: EditSweepConfig) -> None:
    """How each method holds up as more edits are written at once: for every method and batch
    size, batches of the edits written into the original (kept in memory, never written) and
    measured as edit-eval measures them. rome writes a batch one edit after another.
    """
    from memaudit.editing.sweep import run_edit_sweep

    with StageBars() as bars:
        path, results = run_edit_sweep(cfg, progress=bars)
    table = Table(title="Model editing: batch-size sweep")
    for col in ("method", "at once", "efficacy", "paraphrase", "specificity", "fluency ΔNLL"):
        table.add_column(col)

    def cell(x) -> str:
        return "n/a" if not x or x.get("value") is None else f"{x['value']:.2f}"

    for r in results["sweep"]:
        table.add_row(
            r["method"],
            str(r["batch_size"]),
            *(cell(r[k]) for k in ("efficacy", "paraphrase", "specificity", "fluency_nll_change")),
        )
    out_console.print(table)
    out_console.print(f"run: {path}")


@config_command(app, "edit-facts", EditFactsConfig)
def edit_facts(cfg: EditFactsConfig) -> None:
    """Write a synthetic fact set: train.txt (every fact sentence, --copies times, for
    `memaudit train --corpus`), facts.jsonl, edits.jsonl (facts to change), controls.jsonl
    (edits never applied: the non-members of edit-eval's membership test) and general.txt (the
    facts not edited: the fluency text for --general).
    """
    from memaudit.editing.make import write_fact_set

    n = write_fact_set(cfg)
    out_console.print(
        f"{n['facts']} facts, {n['edits']} edits, {n['controls']} controls, "
        f"{n['lines']} training lines -> {cfg.out}"
    )


@config_command(app, "edit-secrets", EditSecretsConfig)
def edit_secrets(cfg: EditSecretsConfig) -> None:
    """Turn a forget set of planted secrets into edits: after each canary's prefix, a
    placeholder of the secret's form instead of the secret (`memaudit edit`, then compare
    with `unlearn` in `unlearn-eval`).
    """
    from memaudit.editing.make import write_secret_edits

    n = write_secret_edits(cfg)
    out_console.print(f"{n} edits -> {cfg.out}")
