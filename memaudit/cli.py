"""The ``memaudit`` command line: parse flags, build a config, call the library, show a table.

All work happens in the library; this module only turns results into terminal output and
errors into one-line messages with exit code 2.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .errors import MemauditError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Measure, prove and remove training-data memorization in generative models.",
)
console = Console(stderr=True)
out_console = Console()

EXIT_BAD_INPUT = 2


def main() -> None:
    app()


def reports_errors(command):
    """Run a command with a quiet environment; a MemauditError becomes one line on stderr and exit 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _quiet_environment()
        try:
            return command(*args, **kwargs)
        except MemauditError as e:
            console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None

    return wrapper


def _quiet_environment() -> None:
    """No network, and no third-party progress bars over ours."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class StageBars:
    """A rich progress bar per stage, fed by the library's (stage, done, total) callbacks."""

    def __init__(self):
        self.progress = Progress(
            TextColumn("{task.description:<20}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()


@app.command()
@reports_errors
def mia(
    model: Optional[str] = typer.Option(None, "--model", help="Target model: a local Hugging Face directory (safetensors)."),
    members: Optional[str] = typer.Option(None, "--members", help="Known members: .jsonl (a 'text' field), .txt (one per line), .parquet or a folder."),
    nonmembers: Optional[str] = typer.Option(None, "--nonmembers", help="Known non-members, same formats."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Reference model dir for the 'reference' attack (its tokenizer may differ)."),
    attacks: Optional[str] = typer.Option(None, "--attacks", help="'all' (default) or a comma list, e.g. 'loss,zlib,min_k:k=0.1'. See `memaudit attacks`."),
    out: Optional[str] = typer.Option(None, "--out", help="Run directory for results.json, scores.parquet, report.html [default: runs/mia]."),
    config: Optional[str] = typer.Option(None, "--config", help="JSON or TOML file of settings; flags given here override it."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:1, ..."),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code", help="Allow a model's own Python code to run (off by default)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Window length in tokens [default: the model's context]."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Sliding-window stride for long texts [default: half a window]."),
    batch_tokens: Optional[int] = typer.Option(None, "--batch-tokens", help="Padded tokens per forward batch [default: 8192]."),
    max_batch_size: Optional[int] = typer.Option(None, "--max-batch-size", help="Windows per forward batch at most [default: 64]."),
    shard_texts: Optional[int] = typer.Option(None, "--shard-texts", help="Texts per cache shard [default: 256]."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Score cache root [default: $MEMAUDIT_CACHE or ~/.cache/memaudit]."),
    no_cache: Optional[bool] = typer.Option(None, "--no-cache", help="Score everything afresh and keep nothing."),
    skip_invalid: Optional[bool] = typer.Option(None, "--skip-invalid", help="Skip invalid records (counted in results.json) instead of stopping."),
    n_bootstrap: Optional[int] = typer.Option(None, "--n-bootstrap", help="Bootstrap rounds for the 95%% CIs [default: 1000]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the bootstrap [default: 0]."),
    no_report: Optional[bool] = typer.Option(None, "--no-report", help="Skip report.html."),
):
    """Membership inference: how well does each attack tell members from non-members?

    Scores every text once per model (one forward pass per text window), runs every
    selected attack on those scores, and writes AUC and TPR at 1% / 0.1% FPR with
    bootstrap CIs to the run directory.
    """
    from .config import MiaConfig, resolve_config
    from .mia import run_mia

    cfg = resolve_config(
        MiaConfig,
        config_file=config,
        model=model,
        members=members,
        nonmembers=nonmembers,
        reference=reference,
        attacks=attacks,
        out=out,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        max_length=max_length,
        stride=stride,
        batch_tokens=batch_tokens,
        max_batch_size=max_batch_size,
        shard_texts=shard_texts,
        cache_dir=cache_dir,
        no_cache=no_cache,
        skip_invalid=skip_invalid,
        n_bootstrap=n_bootstrap,
        seed=seed,
        report=None if no_report is None else not no_report,
    )
    with StageBars() as bars:
        outcome = run_mia(cfg, progress=bars)
    _print_mia_summary(outcome.results)
    for w in outcome.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    out_console.print(f"results: {outcome.out_dir / 'results.json'}")
    if cfg.report:
        out_console.print(f"report:  {outcome.out_dir / 'report.html'}")


def _print_mia_summary(results: dict) -> None:
    table = Table(title="Membership inference (higher score = member)")
    for col in ("attack", "AUC [95% CI]", "TPR@1%FPR", "TPR@0.1%FPR"):
        table.add_column(col, justify="left" if col == "attack" else "right")
    fmt = lambda e: f"{e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"  # noqa: E731
    for name, m in sorted(results["metrics"].items(), key=lambda kv: -kv[1]["auc"]["value"]):
        table.add_row(name, fmt(m["auc"]), f"{m['tpr@1%fpr']['value']:.3f}", f"{m['tpr@0.1%fpr']['value']:.3f}")
    out_console.print(table)
    for note in results["notes"]:
        console.print(f"[dim]note: {note}[/]")


@app.command("attacks")
@reports_errors
def list_attacks():
    """List the registered membership-inference attacks."""
    from .attacks import ATTACKS

    table = Table(title="Registered attacks (higher score = more likely member)")
    table.add_column("name")
    table.add_column("needs")
    table.add_column("params")
    table.add_column("description")
    for a in ATTACKS:
        params = ", ".join(f"{k}={v:g}" for k, v in a.defaults.items())
        table.add_row(a.name, ", ".join(sorted(a.needs)) or "-", params or "-", a.description)
    out_console.print(table)


@app.command()
@reports_errors
def demo(
    out: str = typer.Option("runs/demo", "--out", help="Where the demo writes its models, data and report."),
    quick: bool = typer.Option(False, "--quick", help="A smaller, faster run (used by the tests)."),
    seed: int = typer.Option(0, "--seed", help="Seed of data selection and training."),
):
    """Train a small model on standard-library source, then audit it for membership.

    Everything is made here: texts from this Python's own standard library, a tokenizer,
    and a GPT-2-style model trained on the member texts. Then `memaudit mia` runs on
    members vs held-out texts and writes an HTML report whose path is printed.
    """
    from .demo import DemoSettings, run_demo

    settings = DemoSettings.quick(seed=seed) if quick else DemoSettings(seed=seed)
    with StageBars() as bars:
        outcome = run_demo(Path(out), settings, progress=bars)
    _print_mia_summary(outcome.results)
    out_console.print(f"report: {outcome.out_dir / 'report.html'}")


if __name__ == "__main__":
    main()
