"""Matplotlib figures rendered to embeddable PNG data URIs."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def roc_figure(roc: dict[str, dict[str, list[float]]], aucs: dict[str, float]) -> str:
    """ROC curves of every attack, linear and log-log side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, pts in roc.items():
        label = f"{name} (AUC {aucs[name]:.3f})"
        for ax in axes:
            ax.plot(pts["fpr"], pts["tpr"], label=label, lw=1.4)
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    axes[1].set(
        xscale="log",
        yscale="log",
        xlim=(1e-3, 1),
        ylim=(1e-3, 1.05),
        xlabel="false positive rate",
        title="ROC, log-log",
    )
    axes[1].plot([1e-3, 1], [1e-3, 1], "k:", lw=0.8)
    axes[0].legend(fontsize=8, loc="lower right")
    return to_data_uri(fig)


def histogram_figure(scores: np.ndarray, labels: np.ndarray, title: str) -> str:
    """Score distributions of members vs non-members for one attack."""
    fig, ax = plt.subplots(figsize=(4.2, 3))
    finite = np.isfinite(scores)
    bins = list(np.histogram_bin_edges(scores[finite], bins=30)) if finite.any() else 10
    for label, name, color in ((1, "members", "#c0392b"), (0, "non-members", "#2980b9")):
        ax.hist(scores[(labels == label) & finite], bins=bins, alpha=0.55, label=name, color=color)
    ax.set(title=title, xlabel="score (higher = more likely member)", ylabel="texts")
    ax.legend(fontsize=8)
    return to_data_uri(fig)


def curves_figure(
    x: list,
    series: dict[str, list[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
) -> str:
    """One line per series against a shared x (e.g. a rate per repetition count)."""
    fig, ax = plt.subplots(figsize=(4.8, 3.3))
    numeric = all(isinstance(v, (int, float)) for v in x)
    positions = x if numeric else list(range(len(x)))
    for name, ys in series.items():
        ax.plot(positions, ys, marker="o", label=name)
    if logx and numeric:
        ax.set_xscale("log", base=2)
        ax.set_xticks(
            positions, [f"{v:g}" for v in positions]
        )  # 1, 4, 16 rather than 2^0, 2^2, 2^4
        ax.minorticks_off()
    if not numeric:
        ax.set_xticks(positions, [str(v) for v in x], rotation=30)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return to_data_uri(fig)
