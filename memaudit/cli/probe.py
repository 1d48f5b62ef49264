"""``memaudit probe ...``: is the model reasoning or reciting, and what does it recall from its
context?
"""

from __future__ import annotations

import typer
from rich.table import Table

from memaudit.probes.config import (
    KKMakeConfig,
    KKRunConfig,
    OrderConfig,
    RecallConfig,
    RecallSweepConfig,
    RecallTrainConfig,
    RetentionConfig,
    TemporalConfig,
    TemporalMakeConfig,
)

from .common import StageBars, config_command, out_console

probe_app = typer.Typer(no_args_is_help=True, help="Probes: is the model reasoning or reciting?")
kk_app = typer.Typer(
    no_args_is_help=True,
    help="Knights and Knaves puzzles: make them, and measure accuracy, consistency and LiMem.",
)
probe_app.add_typer(kk_app, name="kk")


def _print_paths(path) -> None:
    out_console.print(f"results: {path / 'results.json'}\nreport:  {path / 'report.html'}")


@config_command(kk_app, "make", KKMakeConfig)
def kk_make(cfg: KKMakeConfig) -> None:
    """Make puzzles with exactly one solution (checked by brute force over every assignment)."""
    from memaudit.probes.kk_run import write_puzzles

    path = write_puzzles(cfg.out, list(cfg.people), cfg.n, depth=cfg.depth, seed=cfg.seed)
    out_console.print(f"{cfg.n * len(cfg.people)} puzzles -> {path}")


@config_command(kk_app, "run", KKRunConfig)
def kk_run(cfg: KKRunConfig) -> None:
    """Accuracy on the puzzles, then consistency and LiMem = Acc x (1 - CR) per perturbation."""
    from memaudit.probes.kk_run import run_kk

    with StageBars() as bars:
        path, results = run_kk(cfg, progress=bars)
    table = Table(
        title=(
            f"Knights and Knaves: accuracy {results['accuracy']:.3f} on "
            f"{results['data']['puzzles']} puzzles"
        )
    )
    for col in ("perturbation", "accuracy after", "consistency", "LiMem"):
        table.add_column(col, justify="left" if col == "perturbation" else "right")
    for k, s in results["perturbations"].items():
        table.add_row(
            k,
            f"{s['perturbed_accuracy']['value']:.3f}",
            f"{s['consistency']['value']:.3f}",
            f"{s['limem']['value']:.3f}",
        )
    out_console.print(table)
    _print_paths(path)


@config_command(probe_app, "temporal", TemporalConfig)
def temporal(cfg: TemporalConfig) -> None:
    """Accuracy on dated facts before vs after the training cutoff, per period, with a plot."""
    from memaudit.probes.temporal import run_temporal

    with StageBars() as bars:
        path, res = run_temporal(cfg, progress=bars)
    b, a = res["before"], res["after"]
    out_console.print(
        f"accuracy before {res['cutoff']}: {b['value']:.3f} (n={b['n']}); after: {a['value']:.3f} "
        f"(n={a['n']})"
    )
    _print_paths(path)


@config_command(probe_app, "temporal-make", TemporalMakeConfig)
def temporal_make(cfg: TemporalMakeConfig) -> None:
    """Synthetic dated facts (invented prices), and optionally the training corpus of those
    before a cutoff.
    """
    from memaudit.probes.temporal import make_facts, write_facts

    first, last, cut = cfg.dates()
    rows = make_facts(first, last, per_month=cfg.per_month, seed=cfg.seed)
    write_facts(cfg.out, rows)
    out_console.print(f"{len(rows)} facts -> {cfg.out}")
    if cut is not None:
        before = [r for r in rows if r["date"] < cut.isoformat()]
        write_facts(cfg.train_out, before)
        out_console.print(
            f"{len(before)} facts before {cut} -> {cfg.train_out} (train on it, then probe with "
            f"--cutoff {cut})"
        )


@config_command(probe_app, "retention", RetentionConfig)
def retention(cfg: RetentionConfig) -> None:
    """Recognition and recall of each repetition level while training continues on new data (the
    model dir is not changed).
    """
    from memaudit.probes.retention import run_retention

    with StageBars() as bars:
        path, res = run_retention(cfg, progress=bars)
    table = Table(title="Retention (recognition / recall)")
    levels = list(next(iter(res["curve"].values())))
    table.add_column("step", justify="right")
    for lv in levels:
        table.add_column(f"{lv} reps", justify="right")
    for s, row in res["curve"].items():
        table.add_row(
            s, *(f"{row[lv]['recognition']:.2f} / {row[lv]['recall']:.2f}" for lv in levels)
        )
    out_console.print(table)
    _print_paths(path)


@config_command(probe_app, "recall", RecallConfig)
def recall(cfg: RecallConfig) -> None:
    """Recall from the context: accuracy against length and pairs (mqar) or needle depth (niah),
    as a heatmap.
    """
    from memaudit.probes.recall import run_recall

    with StageBars() as bars:
        path, res = run_recall(cfg, progress=bars)
    cells = ", ".join(f"{k}: {v:.2f}" for k, v in res["grid"].items() if v is not None)
    out_console.print(f"{cfg.task} accuracy (length x {res['axis']}): {cells}")
    _print_paths(path)


@config_command(probe_app, "recall-train", RecallTrainConfig)
def recall_train(cfg: RecallTrainConfig) -> None:
    """Train a small model on MQAR at one length, to probe with `memaudit probe recall`.

    --arch llama or gpt2 trains a transformers micro model (--model-size); any other name is a
    zoo mixer (attention, sliding_window, linear_attention, based, gla, deltanet, titans,
    memory_caching) of width --d-model, with --state its own state-size knob.
    """
    with StageBars() as bars:
        if cfg.is_zoo():
            from memaudit.probes.zoo_train import train_zoo_mqar_model

            path = train_zoo_mqar_model(
                cfg.out,
                arch=cfg.arch,
                d_model=cfg.d_model or 64,
                state=cfg.state,
                n_layers=cfg.n_layers,
                length=cfg.length,
                pairs=cfg.pairs,
                vocab=cfg.vocab,
                layout=cfg.layout,
                alpha=cfg.alpha,
                steps=cfg.steps,
                lr=cfg.lr,
                seed=cfg.seed,
                overwrite=cfg.overwrite,
                progress=bars,
            )
        else:
            from memaudit.probes.recall import train_mqar_model

            path = train_mqar_model(
                cfg.out,
                length=cfg.length,
                pairs=cfg.pairs,
                vocab=cfg.vocab,
                layout=cfg.layout,
                alpha=cfg.alpha,
                steps=cfg.steps,
                lr=cfg.lr,
                size=cfg.size,
                arch=cfg.arch,
                seed=cfg.seed,
                overwrite=cfg.overwrite,
                progress=bars,
            )
    out_console.print(f"model: {path}")


@config_command(probe_app, "recall-sweep", RecallSweepConfig)
def recall_sweep(cfg: RecallSweepConfig) -> None:
    """MQAR recall against recurrent state: one zoo model per (arch, width, state), trained on
    MQAR and evaluated over lengths x pairs, in parallel workers; a rerun resumes.

    Writes results.json, scores.parquet (one row per cell x length x pairs) and report.html
    (accuracy vs state floats per arch, vs pairs and vs length at a comparable state, training
    tokens/s). Recipe and plots: docs/probes.md.
    """
    from memaudit.probes.sweep import run_sweep

    with StageBars() as bars:
        path, res = run_sweep(cfg, progress=bars)
    table = Table(title=f"MQAR recall vs state ({res['trained_cells']} cells trained now)")
    for col in ("cell", "state floats", "tokens/s", "mean accuracy"):
        table.add_column(col, justify="left" if col == "cell" else "right")
    longest = str(max(res["recipe"]["eval"]["lengths"]))
    for c in res["cells"]:
        tps = c["training"]["tokens_per_s"]
        table.add_row(
            c["label"],
            f"{c['state_floats'][longest]:,}",
            f"{tps:,.0f}" if tps else "-",
            f"{c['mean_accuracy']:.3f}" if c["mean_accuracy"] is not None else "-",
        )
    out_console.print(table)
    _print_paths(path)


@config_command(probe_app, "order", OrderConfig)
def order(cfg: OrderConfig) -> None:
    """Training order and memorization: each sample's final loss at other positions in training,
    retrained (truth) next to the estimate from one recorded run (Taylor-expanded AdamW
    updates, randomly projected; docs/order.md).
    """
    from memaudit.probes.order import run_order

    with StageBars() as bars:
        path, res = run_order(cfg, progress=bars)
    table = Table(title="Training order: estimate vs retrained (position effect on final loss)")
    for col in ("estimate", "Pearson", "Spearman", "MAE", "n"):
        table.add_column(col, justify="left" if col == "estimate" else "right")
    for name, m in res["measures"].items():
        if "position_effect" not in m:
            continue
        e = m["position_effect"]
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        table.add_row(name, fmt(e["pearson"]), fmt(e["spearman"]), f"{e['mae']:.4f}", str(e["n"]))
    out_console.print(table)
    _print_paths(path)
