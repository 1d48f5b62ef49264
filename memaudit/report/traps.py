"""The report of ``memaudit traps detect``: the detection grid as a heatmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import plt, to_data_uri
from .render import write_report


def heatmap(cells: list[dict], attack: str) -> str:
    lengths = sorted({c["length"] for c in cells})
    reps = sorted({c["repetitions"] for c in cells})
    grid = np.full((len(lengths), len(reps)), np.nan)
    for c in cells:
        grid[lengths.index(c["length"]), reps.index(c["repetitions"])] = c[attack]["value"]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(reps), 1.0 + 0.8 * len(lengths)))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn")
    ax.set_xticks(range(len(reps)), [str(r) for r in reps])
    ax.set_yticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set(xlabel="repetitions", ylabel="trap length (tokens)", title=f"AUC, {attack} attack")
    for i in range(len(lengths)):
        for j in range(len(reps)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return to_data_uri(fig)


def write_traps_report(out_dir: Path, results: dict) -> Path:
    path = write_report(
        out_dir,
        "traps.html",
        title="Copyright-trap detection",
        results=results,
        heatmaps=[heatmap(results["pooled_grid"], a) for a in results["attacks"]],
    )
    return path
