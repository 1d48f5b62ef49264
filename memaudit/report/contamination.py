"""The report of ``memaudit contamination``: the contaminated share, the n-gram overlap of
every item, and (with a model) accuracy and answer NLL on dirty vs clean items.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import plt, to_data_uri
from .render import write_report

LISTED = 50  # contaminated items listed at most


def share_figure(shares: list[float], threshold: float, ngram: int) -> str:
    """Histogram of the items' shares of n-grams found, with the threshold marked."""
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    values = np.array([s for s in shares if s == s])  # items without n-grams left out
    ax.hist(values, bins=[k / 20 for k in range(21)], color="#2980b9", alpha=0.8)
    ax.axvline(threshold, color="#c0392b", ls="--", lw=1.2, label=f"threshold {threshold:g}")
    ax.set(xlabel=f"share of the item's {ngram}-grams in the corpus", ylabel="items")
    ax.legend(fontsize=8)
    return to_data_uri(fig)


def write_contamination_report(out_dir: Path, results: dict, *, rows: list[dict]) -> Path:
    c = results["contamination"]
    dirty = sorted((r for r in rows if r["contaminated"]), key=lambda r: -r["share"])
    return write_report(
        out_dir,
        "contamination.html",
        title="Benchmark contamination",
        results=results,
        figure=share_figure([r["share"] for r in rows], c["threshold"], c["ngram"]),
        dirty=dirty[:LISTED],
    )
