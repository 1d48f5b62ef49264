"""The ``memaudit unlearn`` and ``memaudit unlearn-eval`` commands (registered by cli.py)."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.table import Table

from .app import StageBars, app, out_console, reports_errors


@app.command()
@reports_errors
def unlearn(
    model: str = typer.Option(..., "--model", help="Model dir to unlearn from (never written)."),
    forget: str = typer.Option(..., "--forget", help="Texts to remove: .jsonl, .txt, .parquet or a folder."),
    out: str = typer.Option(..., "--out", help="New model dir to write."),
    method: str = typer.Option("npo", "--method", help="ga, grad_diff, npo, simnpo, or kfac (the curvature edit)."),
    retain: Optional[str] = typer.Option(None, "--retain", help="Data to keep: 'stdlib', a folder, .jsonl, .txt or .parquet (grad_diff and kfac need it; npo and simnpo add its NLL)."),
    retain_chars: Optional[int] = typer.Option(200_000, "--retain-chars", help="Use only the first documents of --retain up to this many characters."),
    steps: int = typer.Option(30, "--steps", help="Optimizer steps (gradient methods)."),
    lr: float = typer.Option(5e-4, "--lr", help="Learning rate (constant, AdamW)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Forget sequences per step."),
    retain_batch_size: int = typer.Option(16, "--retain-batch-size", help="Retain windows per step."),
    seq_len: int = typer.Option(128, "--seq-len", help="Tokens per retain window."),
    beta: Optional[float] = typer.Option(None, "--beta", help="Inverse temperature of npo (default 0.1) and simnpo (default 2.5)."),
    gamma: float = typer.Option(0.0, "--gamma", help="simnpo's margin."),
    retain_weight: float = typer.Option(1.0, "--retain-weight", help="Weight of the retain NLL term."),
    rho: float = typer.Option(0.8, "--rho", help="kfac: share of the curvature mass to keep (1 keeps the weights as they are)."),
    layers: str = typer.Option("all", "--layers", help="kfac: 'all' or block indices ('2,3') whose MLP weights are edited."),
    kfac_batches: int = typer.Option(16, "--kfac-batches", help="kfac: retain batches the curvature is measured on."),
    save_every: int = typer.Option(0, "--save-every", help="Also save the model every N steps (out/step-*), for unlearn-eval's calibration."),
    seed: int = typer.Option(0, "--seed", help="Seed of batch order and retain windows."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
):
    """Remove a forget set from a model into a new model dir.

    Gradient methods (ga, grad_diff, npo, simnpo) share one loop: each step a forget batch
    and a retain batch, the method's loss, AdamW. kfac projects the MLP weights onto their
    high-curvature components measured on retain data, with no gradient step on the forget
    set. Measure the result with `memaudit unlearn-eval`.
    """
    from memaudit.unlearn.run import UnlearnConfig, run_unlearn

    cfg = UnlearnConfig(
        model=model, forget=forget, out=out, method=method, retain=retain, retain_chars=retain_chars, steps=steps, lr=lr,
        batch_size=batch_size, retain_batch_size=retain_batch_size, seq_len=seq_len, beta=beta, gamma=gamma,
        retain_weight=retain_weight, rho=rho, layers=layers, kfac_batches=kfac_batches, save_every=save_every, seed=seed, device=device,
    )
    with StageBars() as bars:
        path = run_unlearn(cfg, progress=bars)
    out_console.print(f"unlearned model: {path}")


@app.command("unlearn-eval")
@reports_errors
def unlearn_eval(
    original: str = typer.Option(..., "--original", help="The model before unlearning."),
    unlearned: List[str] = typer.Option([], "--unlearned", help="An unlearned model dir (repeat for several methods)."),
    forget: str = typer.Option(..., "--forget", help="The forget set (a 'prefix' field, as in canary ledgers, sets the prompt)."),
    holdout: str = typer.Option(..., "--holdout", help="Texts like the forget set but never trained on (e.g. the canaries' twins)."),
    retain: str = typer.Option(..., "--retain", help="Trained-on data to keep: 'stdlib', a folder, .jsonl, .txt or .parquet."),
    retrained: Optional[str] = typer.Option(None, "--retrained", help="A model trained from scratch without the forget set."),
    retrain: bool = typer.Option(False, "--retrain", help="Train that model now, with the original's own `memaudit train` settings."),
    general: Optional[str] = typer.Option(None, "--general", help="Held-out corpus for general NLL (e.g. `memaudit corpus snippets` output)."),
    retain_chars: Optional[int] = typer.Option(200_000, "--retain-chars", help="Use only the first documents of --retain up to this many characters."),
    eval_texts: int = typer.Option(200, "--eval-texts", help="Retain and general texts measured."),
    prefix_tokens: int = typer.Option(32, "--prefix-tokens", help="Prompt length for forget texts without a prefix field."),
    suffix_tokens: int = typer.Option(32, "--suffix-tokens", help="Continuation tokens compared."),
    relearn_steps: int = typer.Option(10, "--relearn-steps", help="Fine-tuning steps of the relearning attack (0: skip)."),
    relearn_lr: float = typer.Option(1e-3, "--relearn-lr", help="Learning rate of the relearning attack."),
    retain_budget: float = typer.Option(0.1, "--retain-budget", help="Calibration: the retain NLL increase (nats/token) methods are compared within."),
    out: str = typer.Option("runs/unlearn-eval", "--out", help="Run directory."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Score cache root."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    seed: int = typer.Option(0, "--seed", help="Seed of the forget-set halves and the bootstrap."),
):
    """Is it gone? Extraction, MIA, retain cost, a relearning attack and calibration, for every model side by side."""
    from memaudit.unlearn.evaluate import UnlearnEvalConfig, run_unlearn_eval

    cfg = UnlearnEvalConfig(
        original=original, unlearned=tuple(unlearned), forget=forget, holdout=holdout, retain=retain, retrained=retrained,
        retrain=retrain, general=general, retain_chars=retain_chars, eval_texts=eval_texts, prefix_tokens=prefix_tokens,
        suffix_tokens=suffix_tokens, relearn_steps=relearn_steps, relearn_lr=relearn_lr, retain_budget=retain_budget, out=out,
        cache_dir=cache_dir, device=device, seed=seed,
    )
    with StageBars() as bars:
        path, results = run_unlearn_eval(cfg, progress=bars)
    table = Table(title="Unlearning evaluation")
    for col in ("model", "forget exact", "forget loose", "MIA AUC (loss)", "retain dNLL", "relearn: NLL recovered"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, m in results["evaluation"].items():
        d = m["retain"]["delta"]
        r = m.get("relearn")
        table.add_row(
            name, f"{m['forget']['exact']['value']:.3f}", f"{m['forget']['loose']['value']:.3f}", f"{m['mia']['loss']['value']:.3f}",
            f"{d['value']:+.3f}" if d else "-", f"{r['nll_recovered']:.2f}" if r else "-",
        )
    out_console.print(table)
    out_console.print(f"results: {path / 'results.json'}\nreport:  {path / 'report.html'}")
