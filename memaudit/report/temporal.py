"""The report of ``memaudit probe temporal``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import plt, to_data_uri
from .render import write_report

SIDE_COLORS = {"before": "#2980b9", "after": "#c0392b", "straddles": "#7f8c8d"}


def write_temporal_report(out_dir: Path, results: dict) -> Path:
    path = write_report(
        out_dir,
        "temporal.html",
        title="Temporal contamination: before and after the cutoff",
        results=results,
        figure=_figure(results),
    )
    return path


def _figure(results: dict) -> str:
    periods = list(results["by_period"])
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(periods)), 3.4))
    x = np.arange(len(periods))
    v = [results["by_period"][p]["value"] for p in periods]
    ax.bar(x, v, color=[SIDE_COLORS[results["by_period"][p]["side"]] for p in periods])
    cut = next(
        (i for i, p in enumerate(periods) if results["by_period"][p]["side"] != "before"),
        len(periods),
    )
    ax.axvline(cut - 0.5, color="k", ls="--", lw=1)
    ax.text(cut - 0.45, 1.0, f"cutoff {results['cutoff']}", fontsize=8, va="top")
    ax.set_xticks(x, periods, rotation=60, fontsize=7)
    ax.set(ylim=(0, 1.05), ylabel="accuracy")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return to_data_uri(fig)
