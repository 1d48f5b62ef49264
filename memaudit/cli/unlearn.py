"""``memaudit unlearn`` and ``memaudit unlearn-eval``: remove memorized data, and prove it is
gone.
"""

from __future__ import annotations

import json

import typer
from rich.table import Table

from memaudit.unlearn.config import UnlearnConfig, UnlearnEvalConfig

from .common import StageBars, config_command, console, out_console, say_skipped

app = typer.Typer()


@config_command(app, "unlearn", UnlearnConfig)
def unlearn(cfg: UnlearnConfig) -> None:
    """Remove a forget set from a model into a new model dir.

    Gradient methods (ga, grad_diff, npo, simnpo, wga, idk_dpo, rmu) share one loop: each step
    a forget batch and a retain batch, the method's loss, AdamW. wga weights each token's
    ascent by its probability; idk_dpo prefers a placeholder answer (--idk-answer) after each
    forget text's prompt; rmu steers a middle block's forget activations to a random
    direction (--rmu-layer, --rmu-steering, --rmu-alpha). kfac projects the MLP weights onto
    their high-curvature components measured on retain data, with no gradient step on the
    forget set. --lora-rank R trains low-rank adapters only (the peft extra) and writes the
    merged model. --eval-every N measures forget extraction, MIA and retain NLL along the
    run. Measure the result with `memaudit unlearn-eval`.
    """
    from memaudit.unlearn.run import UNLEARN_RECORD, run_unlearn

    with StageBars() as bars:
        path = run_unlearn(cfg, progress=bars)
    record_path = path / UNLEARN_RECORD
    record = json.loads(record_path.read_text())
    say_skipped(record["data"]["skipped"], record_path)
    for note in record.get("eval_notes", []):
        console.print(f"eval: {note}")
    if "eval" in record:
        out_console.print(f"evaluation curve: {path / 'eval.jsonl'}")
    if (record.get("lora") or {}).get("adapter"):
        out_console.print(f"adapter: {path / record['lora']['adapter']}")
    out_console.print(f"unlearned model: {path}")


@config_command(app, "unlearn-eval", UnlearnEvalConfig)
def unlearn_eval(cfg: UnlearnEvalConfig) -> None:
    """Is it gone? Extraction, MIA, retain cost, a relearning attack, a quantization attack,
    forget quality and PrivLeak against the retrained model, and calibration, for every model
    side by side.
    """
    from memaudit.unlearn.evaluate import run_unlearn_eval

    with StageBars() as bars:
        path, results = run_unlearn_eval(cfg, progress=bars)
    table = Table(title="Unlearning evaluation")
    for col in (
        "model",
        "forget exact",
        "forget loose",
        "MIA AUC (loss)",
        "retain dNLL",
        "relearn: NLL recovered",
        "survives quantization",
        "PrivLeak",
    ):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in results["evaluation"].items():
        d = m["retain"]["delta"]
        r = m.get("relearn")
        table.add_row(
            name,
            f"{m['forget']['exact']['value']:.3f}",
            f"{m['forget']['loose']['value']:.3f}",
            f"{m['mia']['loss']['value']:.3f}",
            f"{d['value']:+.3f}" if d else "-",
            f"{r['nll_recovered']:.2f}" if r else "-",
            _survives(m.get("forgetting_survives_quantization")),
            f"{100 * m['vs_retrained']['privleak']:+.1f}%"
            if m.get("vs_retrained", {}).get("privleak") is not None
            else "-",
        )
    out_console.print(table)
    say_skipped(results["data"]["skipped"], path / "results.json")
    out_console.print(f"results: {path / 'results.json'}\nreport:  {path / 'report.html'}")


def _survives(flags: dict | None) -> str:
    """'8:yes 4:NO' from ``forgetting_survives_quantization`` ('-' where not applicable)."""
    if not flags:
        return "-"
    word = {True: "yes", False: "NO", None: "-"}
    return " ".join(f"{bits}:{word[v]}" for bits, v in flags.items())
