"""``memaudit diffusion ...``: train small diffusion models, measure replication and EMM, detect
memorized prompts.
"""

from __future__ import annotations

import typer
from rich.table import Table

from memaudit.diffusion.config import (
    DetectConfig,
    DiffusionTrainConfig,
    EMMConfig,
    MakeClassesConfig,
    MemorizationConfig,
)

from .common import StageBars, config_command, out_console

diffusion_app = typer.Typer(
    no_args_is_help=True,
    help=(
        "Diffusion models: train small ones, measure replication, EMM, and detect memorized "
        "prompts."
    ),
)


@config_command(diffusion_app, "train", DiffusionTrainConfig)
def train(cfg: DiffusionTrainConfig) -> None:
    """Train a small DDPM (own TinyUNet, linear schedule, T=1000, noise prediction) on N images."""
    from memaudit.diffusion.train import run_diffusion_train

    with StageBars() as bars:
        path = run_diffusion_train(cfg, progress=bars)
    out_console.print(f"model dir: {path}")


@config_command(diffusion_app, "memorization", MemorizationConfig)
def memorization(cfg: MemorizationConfig) -> None:
    """Replication ratio R (d1/d2 < 1/3 to the nearest training images) at every checkpoint, and
    its max.
    """
    from memaudit.diffusion.run import run_memorization

    with StageBars() as bars:
        path, results = run_memorization(cfg, progress=bars)
    table = Table(title=f"replication ratio of {cfg.model}")
    for col in ("step", "R", "95% CI"):
        table.add_column(col, justify="right")
    for step, s in results["per_checkpoint"].items():
        table.add_row(step, f"{s['ratio']:.3f}", f"{s['ci_low']:.3f}-{s['ci_high']:.3f}")
    out_console.print(table)
    out_console.print(
        f"max R {results['max_ratio']:.3f} at step {results['max_step']} (searched "
        f"{results['train_images']} training images, duplicates: {cfg.duplicates})\nresults: "
        f"{path / 'results.json'}\nreport:  {path / 'report.html'}"
    )


@config_command(diffusion_app, "emm", EMMConfig)
def emm(cfg: EMMConfig) -> None:
    """Effective model memorization: R vs training-set size per conditioning, and the largest
    size with R >= 90%.
    """
    from memaudit.diffusion.run import run_emm

    with StageBars() as bars:
        path, results = run_emm(cfg, progress=bars)
    table = Table(title="replication ratio R (max over checkpoints) by training-set size")
    table.add_column("conditioning")
    sizes_sorted = sorted(set(cfg.sizes))
    for s in sizes_sorted:
        table.add_column(str(s), justify="right")
    table.add_column("EMM", justify="right")
    for c, curve in results["curves"].items():
        emm_text = (
            "-"
            if curve["emm"] is None
            else f"{'>=' if curve['bound'] == 'above' else ''}{curve['emm']:.0f}"
        )
        table.add_row(c, *(f"{r:.2f}" for r in curve["ratio"]), emm_text)
    out_console.print(table)
    out_console.print(f"results: {path / 'results.json'}\nreport:  {path / 'report.html'}")


@config_command(diffusion_app, "detect", DetectConfig)
def detect(cfg: DetectConfig) -> None:
    """Noise-space detection: guidance norm from pure noise + alignment at low noise (two
    passes), vs the Wen et al. baseline.
    """
    from memaudit.diffusion.run import run_detect

    with StageBars() as bars:
        path, results = run_detect(cfg, progress=bars)
    table = Table(
        title=(
            f"detecting memorized prompts ({results['data']['memorized']} of "
            f"{results['data']['prompts']})"
        )
    )
    for col in ("score", "AUC", "95% CI", "TPR@1%FPR", "TPR@3%FPR"):
        table.add_column(col, justify="right")
    for name, m in results["metrics"].items():
        table.add_row(
            name,
            f"{m['auc']['value']:.3f}",
            f"{m['auc']['ci_low']:.2f}-{m['auc']['ci_high']:.2f}",
            f"{m['tpr@1%fpr']['value']:.3f}",
            f"{m['tpr@3%fpr']['value']:.3f}",
        )
    out_console.print(table)
    combined = results["definitions"]["combined"]
    out_console.print(
        f"combined: weights {combined['weights']}, measured {combined['evaluation']}\n"
        f"results: {path / 'results.json'}\nreport:  {path / 'report.html'}"
    )


@config_command(diffusion_app, "make-classes", MakeClassesConfig)
def make_classes(cfg: MakeClassesConfig) -> None:
    """Write a class-folder dataset with one-image and many-image classes: the test bed of
    `diffusion detect`.
    """
    from memaudit.diffusion.images import load_images, write_skewed_folder

    made = write_skewed_folder(
        load_images(cfg.images),
        cfg.out,
        few=cfg.few,
        many=cfg.many,
        many_images=cfg.many_images,
        copies=cfg.copies,
        seed=cfg.seed,
    )
    out_console.print(
        f"{made['classes']} classes, {made['images']} images -> {cfg.out}\nprompts: "
        f"{made['prompts']}\nlabels:  {made['labels']}"
    )
