"""The report of ``memaudit probe recall``: accuracy as a heatmap over length and pairs (MQAR)
or depth (needle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import plt, to_data_uri
from .render import write_report


def cell_key(length, col) -> str:
    return f"{length}x{col:g}" if isinstance(col, float) else f"{length}x{col}"


def write_recall_report(out_dir: Path, results: dict, *, rows: list, cols: list) -> Path:
    table = [[results["grid"][cell_key(L, c)] for c in cols] for L in rows]
    path = write_report(
        out_dir,
        "recall.html",
        title=f"In-context recall: {results['task'].upper()}",
        results=results,
        rows=rows,
        cols=cols,
        table=table,
        figure=_heatmap(table, rows, cols, results["axis"]),
    )
    return path


def _heatmap(table, rows, cols, axis: str) -> str:
    data = np.array([[np.nan if v is None else v for v in r] for r in table], float)
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2, 0.6 * len(rows) + 1.6))
    im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if not np.isnan(data[i, j]):
                ax.text(
                    j,
                    i,
                    f"{data[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="w" if data[i, j] < 0.6 else "k",
                    fontsize=8,
                )
    ax.set_xticks(range(len(cols)), [f"{c:g}" for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set(xlabel=axis, ylabel="context length (tokens)")
    fig.colorbar(im, ax=ax, label="accuracy")
    fig.tight_layout()
    return to_data_uri(fig)
