"""The ``memaudit probe ...`` commands (registered by cli.py)."""

from __future__ import annotations

import typer
from rich.table import Table

from .cli import StageBars, app, out_console, reports_errors
from .errors import InputError

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
    from .probes.kk_run import write_puzzles

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
    from .probes.kk_run import KKRunConfig, run_kk

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
