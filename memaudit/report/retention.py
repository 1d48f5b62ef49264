"""The report of ``memaudit probe retention``."""

from __future__ import annotations

from pathlib import Path

from .figures import plt, to_data_uri
from .render import write_report


def write_retention_report(out_dir: Path, results: dict) -> Path:
    path = write_report(
        out_dir,
        "retention.html",
        title="Retention: recognition and recall under continued training",
        results=results,
        figure=_figure(results),
        levels=list(next(iter(results["curve"].values()))),
    )
    return path


def _figure(results: dict) -> str:
    steps = [int(s) for s in results["curve"]]
    levels = list(next(iter(results["curve"].values())))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, level in enumerate(levels):
        color = f"C{i}"
        for measure, style in (("recognition", "-"), ("recall", "--")):
            ax.plot(
                steps,
                [results["curve"][str(s)][level][measure] for s in steps],
                style,
                marker="o",
                color=color,
                label=f"{measure}, {level} reps",
            )
    ax.set_xscale("symlog", linthresh=1)
    ax.set(
        xlabel="steps of continued training",
        ylabel="share (recall: token match)",
        ylim=(-0.02, 1.05),
        title="retention",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return to_data_uri(fig)
