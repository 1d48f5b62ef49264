"""The report of ``memaudit probe order``: the estimate next to the retrained truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import plt, to_data_uri
from .render import write_report


def write_order_report(out_dir: Path, results: dict, *, scores: dict | None = None) -> Path:
    import pyarrow.parquet as pq

    table = scores or pq.read_table(Path(out_dir) / "scores.parquet").to_pydict()
    columns = [c for c in table if c.startswith("estimate_") or c.startswith("linear_t")]
    rows = [dict(zip(table, vals, strict=True)) for vals in zip(*table.values(), strict=True)]
    return write_report(
        out_dir,
        "order.html",
        title="Training order: estimated vs retrained memorization",
        results=results,
        measures=results["measures"],
        columns=columns,
        rows=rows,
        scatter=_scatter(table, columns),
        curves=_curves(table, columns[0]),
    )


def _scatter(table: dict, columns: list[str]) -> str:
    truth = np.array(table["truth_nll"]) - np.array(table["reference_nll"])
    moved = ~np.array(table["reference"])
    fig, ax = plt.subplots(figsize=(5, 4))
    for i, col in enumerate(columns):
        est = np.array(table[col]) - np.array(table["reference_nll"])
        ax.scatter(truth[moved], est[moved], s=18, color=f"C{i}", label=col)
    lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
    hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.plot([lo, hi], [lo, hi], color="#999", lw=0.8)
    ax.set(
        xlabel="retrained: loss change vs reference order",
        ylabel="estimated loss change",
        title="position effect, per moved (sample, position)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return to_data_uri(fig)


def _curves(table: dict, column: str) -> str:
    fig, ax = plt.subplots(figsize=(5, 4))
    samples = sorted(set(table["sample"]))
    for i, j in enumerate(samples):
        idx = [k for k, s in enumerate(table["sample"]) if s == j]
        pos = [table["position"][k] for k in idx]
        ax.plot(pos, [table["truth_nll"][k] for k in idx], "-o", color=f"C{i}", label=f"sample {j}")
        ax.plot(pos, [table[column][k] for k in idx], "--x", color=f"C{i}")
    ax.set(
        xlabel="position in training (fraction of steps)",
        ylabel="final loss of the sample (nats/token)",
        title=f"solid: retrained, dashed: {column}",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return to_data_uri(fig)
