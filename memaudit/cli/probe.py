"""The ``memaudit probe ...`` commands (registered by cli.py)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from .app import StageBars, app, out_console, reports_errors
from memaudit.errors import InputError

probe_app = typer.Typer(no_args_is_help=True, help="Probes: is the model reasoning or reciting?")
kk_app = typer.Typer(no_args_is_help=True, help="Knights and Knaves puzzles: make them, and measure accuracy, consistency and LiMem.")
app.add_typer(probe_app, name="probe")
probe_app.add_typer(kk_app, name="kk")


def people_range(text: str) -> list[int]:
    """'2..8', '3' or '2,4,6' as a list of integers.

    >>> people_range("2..4"), people_range("3,5")
    ([2, 3, 4], [3, 5])
    """
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split(".."))
            return list(range(lo, hi + 1))
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--people must look like 2..8, 3 or 2,4,6; got '{text}'") from None


@kk_app.command("make")
@reports_errors
def kk_make(
    people: str = typer.Option("2..8", "--people", help="People per puzzle: a range 2..8, or a list 3,5."),
    n: int = typer.Option(10, "--n", help="Puzzles per number of people."),
    depth: int = typer.Option(2, "--depth", help="Most operators nested in one statement."),
    seed: int = typer.Option(0, "--seed", help="Seed of names, statements and roles."),
    out: str = typer.Option("kk.jsonl", "--out", help="JSONL to write: text (puzzle + answer), prompt, answer, and the puzzle's structure."),
):
    """Make puzzles with exactly one solution (checked by brute force over every assignment)."""
    from memaudit.probes.kk_run import write_puzzles

    path = write_puzzles(out, people_range(people), n, depth=depth, seed=seed)
    out_console.print(f"{n * len(people_range(people))} puzzles -> {path}")


@kk_app.command("run")
@reports_errors
def kk_run(
    model: str = typer.Option(..., "--model", help="Model dir (local, safetensors)."),
    data: str = typer.Option(..., "--data", help="Puzzles from `memaudit probe kk make` (e.g. the ones it was trained on)."),
    perturb: str = typer.Option("leaf,statement,names,roles,order", "--perturb", help="Perturbations to measure consistency under."),
    out: str = typer.Option("runs/kk", "--out", help="Run directory."),
    batch_size: int = typer.Option(16, "--batch-size", help="Puzzles decoded together."),
    seed: int = typer.Option(0, "--seed", help="Seed of the perturbations and the bootstrap."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
):
    """Accuracy on the puzzles, and after each perturbation: consistency and LiMem = Acc x (1 - CR)."""
    from memaudit.probes.kk_run import KKRunConfig, run_kk

    cfg = KKRunConfig(model=model, data=data, perturbations=tuple(x for x in perturb.split(",") if x), out=out, batch_size=batch_size,
                      seed=seed, device=device)
    with StageBars() as bars:
        path, results = run_kk(cfg, progress=bars)
    table = Table(title=f"Knights and Knaves: accuracy {results['accuracy']:.3f} on {results['data']['puzzles']} puzzles")
    for col in ("perturbation", "accuracy after", "consistency", "LiMem"):
        table.add_column(col, justify="left" if col == "perturbation" else "right")
    for k, s in results["perturbations"].items():
        table.add_row(k, f"{s['perturbed_accuracy']['value']:.3f}", f"{s['consistency']['value']:.3f}", f"{s['limem']['value']:.3f}")
    out_console.print(table)
    out_console.print(f"results: {path / 'results.json'}\nreport:  {path / 'report.html'}")


@probe_app.command("temporal")
@reports_errors
def temporal(
    model: str = typer.Option(..., "--model", help="Model dir (local, safetensors)."),
    facts: str = typer.Option(..., "--facts", help="JSONL of dated facts: date (YYYY-MM-DD), prompt, answer (numeric or text)."),
    cutoff: str = typer.Option(..., "--cutoff", help="The model's training cutoff (YYYY-MM-DD); facts on or after it count as after."),
    period: str = typer.Option("quarter", "--period", help="Bars of the plot: year, quarter or month."),
    tolerance: float = typer.Option(0.0, "--tolerance", help="Numeric answers: largest relative error counted correct."),
    max_new_tokens: int = typer.Option(8, "--max-new-tokens", help="Tokens generated per answer."),
    out: str = typer.Option("runs/temporal", "--out", help="Run directory."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
):
    """Accuracy on dated facts before vs after the training cutoff, per period, with a plot."""
    from memaudit.probes.temporal import TemporalConfig, run_temporal

    cfg = TemporalConfig(model=model, facts=facts, cutoff=cutoff, period=period, tolerance=tolerance, max_new_tokens=max_new_tokens,
                         out=out, device=device)
    with StageBars() as bars:
        path, res = run_temporal(cfg, progress=bars)
    b, a = res["before"], res["after"]
    out_console.print(f"accuracy before {res['cutoff']}: {b['value']:.3f} (n={b['n']}); after: {a['value']:.3f} (n={a['n']})")
    out_console.print(f"results: {path / 'results.json'}\nreport:  {path / 'report.html'}")


@probe_app.command("temporal-make")
@reports_errors
def temporal_make(
    start: str = typer.Option("2020-01-01", "--start", help="First date."),
    end: str = typer.Option("2023-12-31", "--end", help="Last date."),
    per_month: int = typer.Option(2, "--per-month", help="Facts per month."),
    cutoff: str = typer.Option(None, "--cutoff", help="Also write the facts before this date as a training corpus (--train-out)."),
    train_out: str = typer.Option("facts-train.jsonl", "--train-out", help="Training corpus of the facts before --cutoff."),
    seed: int = typer.Option(0, "--seed", help="Seed of items, days and prices."),
    out: str = typer.Option("facts.jsonl", "--out", help="JSONL of every fact (date, prompt, answer, text)."),
):
    """Synthetic dated facts (invented prices), and optionally the training corpus of those before a cutoff."""
    import datetime as dt

    from memaudit.probes.temporal import make_facts, write_facts

    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
        cut = dt.date.fromisoformat(cutoff) if cutoff else None
    except ValueError as e:
        raise InputError(f"dates must be YYYY-MM-DD ({e})") from None
    rows = make_facts(first, last, per_month=per_month, seed=seed)
    write_facts(out, rows)
    out_console.print(f"{len(rows)} facts -> {out}")
    if cut is not None:
        before = [r for r in rows if r["date"] < cut.isoformat()]
        write_facts(train_out, before)
        out_console.print(f"{len(before)} facts before {cut} -> {train_out} (train on it, then probe with --cutoff {cut})")


@probe_app.command("retention")
@reports_errors
def retention(
    model: str = typer.Option(..., "--model", help="Model dir trained with the ledger's canaries (e.g. by `memaudit train --ledger`)."),
    ledger: str = typer.Option(..., "--ledger", help="The ledger (members and their twins)."),
    continue_corpus: str = typer.Option(..., "--continue-corpus", help="New data to continue training on: 'stdlib', a folder, .jsonl, .txt, .parquet."),
    steps_list: str = typer.Option("0,10,100,1000", "--steps-list", help="Steps of continued training at which to measure."),
    continue_chars: int = typer.Option(300_000, "--continue-chars", help="Use only the first documents of the new data up to this many characters."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate of the continued training."),
    batch_size: int = typer.Option(16, "--batch-size", help="Sequences per step."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per sequence."),
    seed: int = typer.Option(0, "--seed", help="Seed of the data order."),
    out: str = typer.Option("runs/retention", "--out", help="Run directory."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
):
    """Recognition and recall of each repetition level while training continues on new data (the model dir is not changed)."""
    from .app import _int_list
    from memaudit.probes.retention import RetentionConfig, run_retention

    cfg = RetentionConfig(model=model, ledger=ledger, continue_corpus=continue_corpus, steps_list=_int_list(steps_list, "--steps-list"),
                          continue_chars=continue_chars, lr=lr, batch_size=batch_size, seq_len=seq_len, seed=seed, out=out, device=device)
    with StageBars() as bars:
        path, res = run_retention(cfg, progress=bars)
    table = Table(title="Retention (recognition / recall)")
    levels = list(next(iter(res["curve"].values())))
    table.add_column("step", justify="right")
    for lv in levels:
        table.add_column(f"{lv} reps", justify="right")
    for s, row in res["curve"].items():
        table.add_row(s, *(f"{row[lv]['recognition']:.2f} / {row[lv]['recall']:.2f}" for lv in levels))
    out_console.print(table)
    out_console.print(f"results: {path / 'results.json'}\nreport:  {path / 'report.html'}")


@probe_app.command("recall")
@reports_errors
def recall(
    model: str = typer.Option(..., "--model", help="Model dir (local, safetensors)."),
    task: str = typer.Option("mqar", "--task", help="mqar (associative recall on token ids) or niah (needle in a haystack)."),
    lengths: str = typer.Option("64,128,256", "--lengths", help="Context lengths in tokens (at most the model's context)."),
    pairs: str = typer.Option("2,4,8,16", "--pairs", help="mqar: key-value pairs per sequence."),
    depths: str = typer.Option("0,0.25,0.5,0.75,1", "--depths", help="niah: where the needle sits (0 start, 1 end)."),
    n: int = typer.Option(64, "--n", help="Sequences per cell."),
    vocab: Optional[int] = typer.Option(None, "--vocab", help="mqar: ids used [default: what `probe recall-train` recorded, else the model's vocabulary]."),
    filler: str = typer.Option("stdlib", "--filler", help="niah: the haystack's text ('stdlib', a folder, .jsonl, .txt)."),
    seed: int = typer.Option(0, "--seed", help="Seed of keys, values and needles."),
    out: str = typer.Option("runs/recall", "--out", help="Run directory."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
):
    """Recall from the context: accuracy against length and pairs (mqar) or needle depth (niah), as a heatmap."""
    from .app import _int_list
    from memaudit.probes.recall import RecallConfig, run_recall

    try:
        depth_values = tuple(float(x) for x in depths.split(",") if x.strip())
    except ValueError:
        raise InputError(f"--depths must be numbers between 0 and 1, got '{depths}'") from None
    cfg = RecallConfig(model=model, task=task, lengths=_int_list(lengths, "--lengths"), pairs=_int_list(pairs, "--pairs"), depths=depth_values,
                       n=n, vocab=vocab, filler=filler, seed=seed, out=out, device=device)
    with StageBars() as bars:
        path, res = run_recall(cfg, progress=bars)
    cells = ", ".join(f"{k}: {v:.2f}" for k, v in res["grid"].items() if v is not None)
    out_console.print(f"{task} accuracy (length x {res['axis']}): {cells}")
    out_console.print(f"results: {path / 'results.json'}\nreport:  {path / 'report.html'}")


@probe_app.command("recall-train")
@reports_errors
def recall_train(
    out: str = typer.Option(..., "--out", help="Model dir to write."),
    length: int = typer.Option(32, "--length", help="Training sequence length."),
    pairs: int = typer.Option(4, "--pairs", help="Key-value pairs per training sequence."),
    vocab: int = typer.Option(64, "--vocab", help="MQAR ids used (keys below vocab/2, values above); `probe recall` reads it from the model dir."),
    steps: int = typer.Option(600, "--steps", help="Optimizer steps."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate (at 3e-3 some seeds stay on the plateau)."),
    size: str = typer.Option("micro", "--model-size", help="micro, tiny, small or base."),
    arch: str = typer.Option("llama", "--arch", help="llama (rotary positions) or gpt2 (learned absolute positions)."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation and data."),
):
    """Train a small attention model on MQAR at one length, to probe with `memaudit probe recall`."""
    from memaudit.probes.recall import train_mqar_model

    with StageBars() as bars:
        path = train_mqar_model(out, length=length, pairs=pairs, vocab=vocab, steps=steps, lr=lr, size=size, arch=arch, seed=seed, progress=bars)
    out_console.print(f"model: {path}")
