"""The ``memaudit diffusion ...`` commands (registered by cli.py)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from .app import StageBars, _int_list, app, out_console, reports_errors

diffusion_app = typer.Typer(no_args_is_help=True, help="Diffusion models: train small ones, measure replication, EMM, and detect memorized prompts.")
app.add_typer(diffusion_app, name="diffusion")


@diffusion_app.command("train")
@reports_errors
def train(
    images: str = typer.Option("digits", "--images", help="'digits' (scikit-learn's bundled 8x8 digits) or a folder of images (class subfolders give labels)."),
    n: Optional[int] = typer.Option(None, "--n", help="Training images, class-balanced [default: all of them]."),
    conditioning: str = typer.Option("none", "--conditioning", help="none, class (the source's labels) or random-labels."),
    classes: Optional[int] = typer.Option(None, "--classes", help="Number of random labels (random-labels only) [default: 10]."),
    steps: int = typer.Option(3000, "--steps", help="Optimizer steps."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per step (drawn with replacement from the N)."),
    lr: float = typer.Option(2e-3, "--lr", help="AdamW learning rate."),
    width: int = typer.Option(32, "--width", help="UNet channels at full resolution (multiple of 8)."),
    checkpoints: int = typer.Option(4, "--checkpoints", help="Checkpoints kept, evenly spaced (the replication ratio is measured at each)."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize every image to SIZE x SIZE (needed when a folder's images differ in size)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the subset, labels, initialization and batches."),
    out: str = typer.Option(..., "--out", help="Model dir to write; rerunning the same command resumes a killed run."),
):
    """Train a small DDPM (own TinyUNet, linear schedule, T=1000, noise prediction) on N images."""
    from memaudit.diffusion.train import DiffusionTrainConfig, run_diffusion_train

    cfg = DiffusionTrainConfig(images=images, n=n, out=out, conditioning=conditioning, classes=classes, steps=steps, batch_size=batch_size,
                               lr=lr, width=width, checkpoints=checkpoints, resize=resize, seed=seed)
    with StageBars() as bars:
        path = run_diffusion_train(cfg, progress=bars)
    out_console.print(f"model dir: {path}")


@diffusion_app.command("memorization")
@reports_errors
def memorization(
    model: str = typer.Option(..., "--model", help="Model dir from `memaudit diffusion train`."),
    train_images: Optional[str] = typer.Option(None, "--train", help="Training images to search: 'digits' or a folder [default: the exact images the model trained on]."),
    samples: int = typer.Option(1000, "--samples", help="Images generated per checkpoint."),
    sampling_steps: int = typer.Option(50, "--sampling-steps", help="DDIM steps per image."),
    guidance: float = typer.Option(1.0, "--guidance", help="Classifier-free guidance weight (conditional models; 1 = plain conditional)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise and the sampled labels."),
    out: str = typer.Option("runs/diffusion-memorization", "--out", help="Run directory."),
):
    """Replication ratio R (d1/d2 < 1/3 to the nearest training images) at every checkpoint, and its max."""
    from memaudit.diffusion.run import MemorizationConfig, run_memorization

    cfg = MemorizationConfig(model=model, train=train_images, samples=samples, sampling_steps=sampling_steps, guidance=guidance, seed=seed, out=out)
    with StageBars() as bars:
        path, results = run_memorization(cfg, progress=bars)
    table = Table(title=f"replication ratio of {model}")
    for col in ("step", "R", "95% CI"):
        table.add_column(col, justify="right")
    for step, s in results["per_checkpoint"].items():
        table.add_row(step, f"{s['ratio']:.3f}", f"{s['ci_low']:.3f}-{s['ci_high']:.3f}")
    out_console.print(table)
    out_console.print(f"max R {results['max_ratio']:.3f} at step {results['max_step']}\nresults: {path / 'results.json'}\nreport:  {path / 'report.html'}")


@diffusion_app.command("emm")
@reports_errors
def emm(
    images: str = typer.Option("digits", "--images", help="'digits' or a folder of images."),
    sizes: str = typer.Option("10,20,30,50,100,200", "--sizes", help="Training-set sizes, one model each."),
    conditioning: str = typer.Option("none,class,random-labels", "--conditioning", help="Conditionings to compare, comma separated."),
    classes: int = typer.Option(10, "--classes", help="Number of random labels."),
    steps: int = typer.Option(2000, "--steps", help="Optimizer steps per model (the same budget for every size)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per step."),
    width: int = typer.Option(16, "--width", help="UNet width."),
    samples: int = typer.Option(500, "--samples", help="Images generated per checkpoint."),
    seed: int = typer.Option(0, "--seed", help="Seed of subsets, labels, training and sampling."),
    workers: int = typer.Option(0, "--workers", help="Models trained at once (0: one per CPU core)."),
    out: str = typer.Option("runs/emm", "--out", help="Run directory (models under models/; a rerun resumes)."),
):
    """Effective model memorization: R vs training-set size per conditioning, and the largest size with R >= 90%."""
    from memaudit.diffusion.emm import EMMConfig
    from memaudit.diffusion.run import run_emm

    cfg = EMMConfig(images=images, sizes=_int_list(sizes, "--sizes"), conditionings=tuple(c for c in conditioning.split(",") if c),
                    classes=classes, steps=steps, batch_size=batch_size, width=width, samples=samples, seed=seed, workers=workers, out=out)
    with StageBars() as bars:
        path, results = run_emm(cfg, progress=bars)
    table = Table(title="replication ratio R (max over checkpoints) by training-set size")
    table.add_column("conditioning")
    sizes_sorted = sorted(set(cfg.sizes))
    for s in sizes_sorted:
        table.add_column(str(s), justify="right")
    table.add_column("EMM", justify="right")
    for c, curve in results["curves"].items():
        emm_text = "-" if curve["emm"] is None else f"{'>=' if curve['bound'] == 'above' else ''}{curve['emm']:.0f}"
        table.add_row(c, *(f"{r:.2f}" for r in curve["ratio"]), emm_text)
    out_console.print(table)
    out_console.print(f"results: {path / 'results.json'}\nreport:  {path / 'report.html'}")


@diffusion_app.command("detect")
@reports_errors
def detect(
    model: str = typer.Option(..., "--model", help="A conditional model dir from `memaudit diffusion train`, or a local Stable-Diffusion-style dir (needs memaudit[diffusion])."),
    prompts: str = typer.Option(..., "--prompts", help="One prompt per line (class ids for our models), or JSONL with a 'prompt' field."),
    labels: str = typer.Option(..., "--labels", help="One 0/1 per line (1 = memorized), or JSONL with a 'label' field; same order as --prompts."),
    noises: int = typer.Option(4, "--noises", help="Pure-noise draws per prompt."),
    guidance: float = typer.Option(3.0, "--guidance", help="Guidance weight used for the x0 prediction and the baseline's steps."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise, the folds and the bootstrap."),
    out: str = typer.Option("runs/diffusion-detect", "--out", help="Run directory."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (diffusers models)."),
):
    """Noise-space detection: guidance norm from pure noise + alignment at low noise (two passes), vs the Wen et al. baseline."""
    from memaudit.diffusion.run import DetectConfig, run_detect

    cfg = DetectConfig(model=model, prompts=prompts, labels=labels, noises=noises, guidance=guidance, seed=seed, out=out, device=device)
    with StageBars() as bars:
        path, results = run_detect(cfg, progress=bars)
    table = Table(title=f"detecting memorized prompts ({results['data']['memorized']} of {results['data']['prompts']})")
    for col in ("score", "AUC", "95% CI", "TPR@1%FPR", "TPR@3%FPR"):
        table.add_column(col, justify="right")
    for name, m in results["metrics"].items():
        table.add_row(name, f"{m['auc']['value']:.3f}", f"{m['auc']['ci_low']:.2f}-{m['auc']['ci_high']:.2f}",
                      f"{m['tpr@1%fpr']['value']:.3f}", f"{m['tpr@3%fpr']['value']:.3f}")
    out_console.print(table)
    out_console.print(f"results: {path / 'results.json'}\nreport:  {path / 'report.html'}")


@diffusion_app.command("make-classes")
@reports_errors
def make_classes(
    images: str = typer.Option("digits", "--images", help="Source images ('digits' or a folder with class subfolders)."),
    few: int = typer.Option(20, "--few", help="Classes holding a single image, duplicated --copies times (memorized by design)."),
    many: int = typer.Option(20, "--many", help="Classes holding --many-images images of one source class each."),
    many_images: int = typer.Option(30, "--many-images", help="Images per 'many' class."),
    copies: int = typer.Option(10, "--copies", help="Copies of each 'few' class's image."),
    seed: int = typer.Option(0, "--seed", help="Seed of the image choice."),
    out: str = typer.Option(..., "--out", help="New folder: one subfolder per class, plus prompts.txt and labels.txt for `detect`."),
):
    """Write a class-folder dataset with one-image and many-image classes: the test bed of `diffusion detect`."""
    from memaudit.diffusion.images import load_images, write_skewed_folder

    made = write_skewed_folder(load_images(images), out, few=few, many=many, many_images=many_images, copies=copies, seed=seed)
    out_console.print(f"{made['classes']} classes, {made['images']} images -> {out}\nprompts: {made['prompts']}\nlabels:  {made['labels']}")
