"""Reports of ``memaudit diffusion memorization | emm | detect``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import plt, roc_figure, to_data_uri
from .render import write_report


def write_memorization_report(out_dir: Path, results: dict, rep, train_pixels: np.ndarray) -> Path:
    steps = [int(s) for s in results["per_checkpoint"]]
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    ax.plot(steps, [results["per_checkpoint"][str(s)]["ratio"] for s in steps], marker="o")
    ax.set(
        xlabel="training step",
        ylabel="replication ratio R",
        ylim=(-0.02, 1.02),
        title="R per checkpoint",
    )
    ax.grid(alpha=0.3)
    return write_report(
        out_dir,
        "diffusion_memorization.html",
        title="Diffusion memorization: replication ratio",
        results=results,
        curve=to_data_uri(fig),
        grid=pairs_grid(rep, train_pixels),
    )


def pairs_grid(rep, train_pixels: np.ndarray, *, k: int = 12, title: str = "") -> str:
    """The k most-memorized samples (lowest d1/d2) above their nearest training images."""
    ratio = rep.neighbours.ratio()
    order = np.argsort(ratio, kind="stable")[:k]
    fig, axes = plt.subplots(2, len(order), figsize=(1.1 * len(order) + 0.4, 2.7), squeeze=False)
    for col, i in enumerate(order):
        for row, img in enumerate((rep.samples[i], train_pixels[rep.neighbours.index1[i]])):
            ax = axes[row][col]
            ax.imshow(
                _to_hwc(img),
                cmap="gray" if img.shape[0] == 1 else None,
                vmin=0,
                vmax=255,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][col].set_title(
            f"{ratio[i]:.2f}", fontsize=8, color="#c0392b" if ratio[i] < 1 / 3 else "#333"
        )
    axes[0][0].set_ylabel("generated", fontsize=8)
    axes[1][0].set_ylabel("nearest\ntraining", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return to_data_uri(fig)


def _to_hwc(img: np.ndarray) -> np.ndarray:
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def write_emm_report(out_dir: Path, results: dict, grids: dict[str, tuple]) -> Path:
    """``grids``: per conditioning, (replication, training images, title) of the run whose
    copies to show.
    """
    shown = {c: pairs_grid(rep, train, title=title) for c, (rep, train, title) in grids.items()}
    return write_report(
        out_dir,
        "diffusion_emm.html",
        title="Effective model memorization (EMM)",
        results=results,
        figure=_emm_figure(results),
        grids=shown,
    )


def _emm_figure(results: dict) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (c, curve) in enumerate(results["curves"].items()):
        x, y = curve["sizes"], curve["ratio"]
        err = np.clip(
            [np.subtract(y, curve["ci_low"]), np.subtract(curve["ci_high"], y)], 0, None
        )  # Wilson ends can round past R
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=f"C{i}", label=c)
        if curve["bound"] == "interpolated":
            ax.axvline(curve["emm"], color=f"C{i}", ls=":", lw=1)
    ax.axhline(results["target"], color="k", ls="--", lw=0.8, label=f"R = {results['target']:.0%}")
    ax.set_xscale("log")
    ax.set(
        xlabel="training-set size |D|",
        ylabel="replication ratio R (max over checkpoints)",
        ylim=(-0.02, 1.02),
        title="R vs training-set size; dotted: EMM",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_data_uri(fig)


def write_detect_report(
    out_dir: Path,
    results: dict,
    scores: dict,
    labels: np.ndarray,
    halves: np.ndarray | None = None,
) -> Path:
    """ROC curves of every score; a combined score with fitted weights gets one curve per half
    (its halves are on different scales, so they are never ranked together).
    """
    from memaudit.metrics import roc_auc, roc_curve

    roc, aucs = {}, {}
    for name, s in scores.items():
        parts = (
            {f"{name}, half {k + 1}": halves == k for k in (0, 1)}
            if name == "combined" and halves is not None
            else {name: np.ones(len(s), dtype=bool)}
        )
        for label, keep in parts.items():
            fpr, tpr, _ = roc_curve(s[keep], labels[keep])
            roc[label] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
            aucs[label] = roc_auc(s[keep], labels[keep])
    return write_report(
        out_dir,
        "diffusion_detect.html",
        title="Noise-space detection of memorized prompts",
        results=results,
        figure=roc_figure(roc, aucs),
    )
