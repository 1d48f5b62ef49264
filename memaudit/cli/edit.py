"""``memaudit edit``: write facts into a copy of a model (ROME, MEMIT, EMMET)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from memaudit.editing.config import EditConfig, EditEvalConfig

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
