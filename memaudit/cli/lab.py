"""``memaudit extract``, ``train``, ``demo``, ``canaries make|split``, ``corpus snippets`` and
``lab sweep``: the lab.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from memaudit.io.corpus import SnippetsConfig
from memaudit.lab.config import (
    CanaryMakeConfig,
    CanarySplitConfig,
    DemoConfig,
    ExtractConfig,
    LabSweepConfig,
    TrainConfig,
)

from .common import StageBars, config_command, out_console, say_skipped

app = typer.Typer()
corpus_app = typer.Typer(
    no_args_is_help=True, help="The embedded corpus: this Python's standard-library source."
)
canaries_app = typer.Typer(
    no_args_is_help=True, help="Plant fake secrets: make canaries and their ledger."
)
lab_app = typer.Typer(
    no_args_is_help=True, help="Experiments that train many small models: Hubble's sweep."
)


@config_command(app, "extract", ExtractConfig)
def extract(cfg: ExtractConfig) -> None:
    """Verbatim extraction: does greedy decoding from a text's first K tokens reproduce the next M?

    Reports exact, loose (token Levenshtein similarity >= 0.75) and token-match rates with
    95% Wilson intervals, overall and per --group-by value, and each text's extraction
    strength (1 - k/|y|: the share of the text, after its first token, that greedy decoding
    reproduces from the fewest given tokens).
    """
    from memaudit.lab.extract import run_extract

    with StageBars() as bars:
        outcome = run_extract(cfg, progress=bars)
    _print_rates_table(outcome.results["rates"], cfg.group_by)
    say_skipped(outcome.results["data"]["skipped"], outcome.out_dir / "results.json")
    out_console.print(f"results: {outcome.out_dir / 'results.json'}")
    if cfg.report:
        out_console.print(f"report:  {outcome.out_dir / 'report.html'}")


def _print_rates_table(rates: dict, group_by: str | None) -> None:
    table = Table(title="Verbatim extraction")
    for col in ("group", "texts", "exact", "loose", "token match", "strength"):
        table.add_column(col, justify="left" if col == "group" else "right")
    rows = [("all", rates["overall"])] + [
        (f"{group_by}={g}", r) for g, r in rates.get("by_group", {}).items()
    ]
    rows += [(f"corpus count {g}", r) for g, r in rates.get("by_duplication", {}).items()]
    for name, r in rows:
        table.add_row(
            name,
            str(r["n"]),
            f"{r['exact']['value']:.3f}",
            f"{r['loose']['value']:.3f}",
            f"{r['token_match']:.3f}",
            f"{r['extraction_strength']:.3f}",
        )
    out_console.print(table)


@config_command(app, "train", TrainConfig)
def train(cfg: TrainConfig) -> None:
    """Train a GPT-2-style model from scratch with canaries inserted at known counts and times.

    Writes a standard model dir (safetensors + tokenizer) that every command loads, plus the
    ledger with each insertion's step, row and offset. Killed and restarted with the same
    settings, it resumes from the last checkpoint and ends with the same weights.
    """
    from memaudit.lab.train import TRAIN_RECORD, run_train

    with StageBars() as bars:
        path = run_train(cfg, progress=bars)
    record = path / TRAIN_RECORD
    say_skipped(json.loads(record.read_text())["corpus"].get("skipped", []), record)
    out_console.print(f"model: {path}")


@config_command(app, "demo", DemoConfig)
def demo(cfg: DemoConfig) -> None:
    """Plant fake secrets in standard-library source, train a small model, and show what it
    memorized.

    Everything is made here, with no download: canaries at known repetition counts (each
    with a never-inserted twin), a tokenizer and a GPT-2-style model trained on this
    Python's own standard library. Then extraction, recognition, exposure and membership
    inference are measured per repetition count, and one HTML report shows them.
    """
    from memaudit.lab.demo import run_demo

    with StageBars() as bars:
        outcome = run_demo(Path(cfg.out), cfg.settings(), overwrite=cfg.overwrite, progress=bars)
    _print_demo_summary(outcome.results)
    out_console.print(f"report: {outcome.report}")


def _print_demo_summary(results: dict) -> None:
    table = Table(title="What the model kept of its canaries (members vs never-seen twins)")
    columns = ("reps", "extracted verbatim", "secret in output", "recognized", "exposure")
    for col in (*columns, "twins' exp.", "AUC (loss)"):
        table.add_column(col, justify="right")
    for level, r in results["summary"]["by_level"].items():
        table.add_row(
            str(level),
            f"{r['exact']:.2f}",
            f"{r['secret_found']:.2f}",
            f"{r['recognition']:.2f}",
            f"{r['exposure']:.1f}",
            f"{r['twins_exposure']:.1f}",
            f"{r['auc']['loss']:.2f}",
        )
    out_console.print(table)


@config_command(canaries_app, "make", CanaryMakeConfig)
def canaries_make(cfg: CanaryMakeConfig) -> None:
    """Make canaries (fake API keys, card numbers, phone numbers, passphrases) and their twins.

    Each canary has a unique prefix and a random secret; its twin comes from the same
    template and is never inserted. `memaudit train --ledger` inserts the members and
    records where.
    """
    from memaudit.lab.canaries import make_canaries, write_ledger

    made = make_canaries(
        repetitions=cfg.repetitions,
        per_level=cfg.per_level,
        templates=cfg.templates,
        policy=cfg.policy,
        seed=cfg.seed,
    )
    write_ledger(cfg.out, made)
    out_console.print(
        f"{sum(c.member for c in made)} canaries + {sum(not c.member for c in made)} twins -> "
        f"{cfg.out}"
    )


@config_command(canaries_app, "split", CanarySplitConfig)
def canaries_split(cfg: CanarySplitConfig) -> None:
    """Split a ledger into a forget set (members) and a holdout (their twins) for `unlearn` /
    `unlearn-eval`.
    """
    from memaudit.lab.canaries import read_ledger, split_ledger, write_texts_with_prefix

    forget, holdout = split_ledger(read_ledger(cfg.ledger), min_repetitions=cfg.min_repetitions)
    write_texts_with_prefix(cfg.forget, forget)
    write_texts_with_prefix(cfg.holdout, holdout)
    out_console.print(
        f"{len(forget)} canaries -> {cfg.forget}, {len(holdout)} twins -> {cfg.holdout}"
    )


@config_command(corpus_app, "snippets", SnippetsConfig)
def corpus_snippets(cfg: SnippetsConfig) -> None:
    """Write standard-library source snippets as JSONL: members, non-members, suspects,
    validation sets.
    """
    from memaudit.io.corpus import write_snippets

    n = write_snippets(cfg)
    out_console.print(f"{n} snippets -> {cfg.out}")


@config_command(lab_app, "sweep", LabSweepConfig)
def lab_sweep(cfg: LabSweepConfig) -> None:
    """Hubble's experiments, small: the same canaries and benchmark items at the same copies,
    with the corpus diluted, inserted in the first, middle or last third of training, and
    benchmark items at several copy counts; one model per cell, a rerun resumes.

    Writes results.json (cells and findings), scores.parquet (one row per cell x canary, twin
    or item), benchmark.jsonl and report.html (extraction, the loss attack and benchmark
    accuracy vs relative frequency, phase and copies). Recipe and measured table: docs/hubble.md.
    """
    from memaudit.lab.sweep import run_lab_sweep

    with StageBars() as bars:
        path, res = run_lab_sweep(cfg, progress=bars)
    table = Table(title=f"Hubble's sweep ({res['trained_cells']} cells trained now)")
    for col in (
        "cell",
        "tokens trained",
        "exact",
        "loss AUC",
        "exposure",
        "items: copies -> accuracy",
    ):
        table.add_column(col, justify="left" if col == "cell" else "right")
    for c in res["cells"]:
        levels = list(c["canaries"].values())
        items = ", ".join(f"{k}: {v['accuracy']:.2f}" for k, v in c["items"].items())
        table.add_row(
            c["label"],
            f"{c['tokens_trained']:,}",
            f"{sum(r['exact'] for r in levels) / len(levels):.2f}",
            f"{sum(r['auc_loss'] for r in levels) / len(levels):.2f}",
            f"{sum(r['exposure'] for r in levels) / len(levels):.1f}",
            items,
        )
    out_console.print(table)
    for name, f in res["findings"].items():
        out_console.print(f"{name}: {f['claim']}: {'holds' if f['holds'] else 'does not hold'}")
    out_console.print(f"results: {path / 'results.json'}")
    if cfg.report:
        out_console.print(f"report:  {path / 'report.html'}")
