"""The report of ``memaudit edit-eval``: one row per edited model."""

from __future__ import annotations

from pathlib import Path

from .render import write_report


def write_edit_report(out_dir: Path, results: dict) -> Path:
    return write_report(out_dir, "editing.html", title="Model editing evaluation", results=results)


def sweep_figure(sweep: list[dict]) -> str:
    """Efficacy, paraphrase and specificity against batch size, one line per method."""
    from .figures import plt, to_data_uri

    measures = ("efficacy", "paraphrase", "specificity")
    fig, axes = plt.subplots(1, len(measures), figsize=(4 * len(measures), 3.2), sharey=True)
    for ax, measure in zip(axes, measures):
        for method in dict.fromkeys(r["method"] for r in sweep):
            pts = sorted(
                (r["batch_size"], r[measure]["value"])
                for r in sweep
                if r["method"] == method and r[measure]["value"] is not None
            )
            if pts:
                ax.plot(*zip(*pts), marker="o", label=method)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("edits at once")
        ax.set_title(measure)
        ax.set_ylim(-0.05, 1.05)
    axes[0].legend()
    fig.tight_layout()
    return to_data_uri(fig)


def write_edit_sweep_report(out_dir: Path, results: dict) -> Path:
    return write_report(
        out_dir,
        "edit_sweep.html",
        title="Model editing: batch-size sweep",
        results=results,
        figure=sweep_figure(results["sweep"]),
    )
