"""The report of ``memaudit lab sweep``: extraction, the loss attack and benchmark accuracy
against relative frequency (dilution), insertion phase and copies (Hubble's experiments).
"""

from __future__ import annotations

from pathlib import Path

from .figures import plt, to_data_uri
from .render import write_report


def write_lab_sweep_report(out_dir: Path, results: dict) -> Path:
    cells = results["cells"]
    uniform = sorted((c for c in cells if c["phase"] == "uniform"), key=lambda c: c["dilution"])
    at = results["config"]["phase_dilution"]
    phased = [c for c in cells if c["dilution"] == at]
    return write_report(
        out_dir,
        "lab_sweep.html",
        title="Hubble's experiments in the lab: dilution, insertion phase, contamination",
        results=results,
        dilution_figure=_canary_figure(
            uniform, "relative_frequency", lambda c: f"dilution {c['dilution']}x", log_x=True
        )
        if uniform
        else None,
        phase_figure=_canary_figure(phased, "copies", lambda c: c["phase"], log_x=True)
        if phased
        else None,
        benchmark_figure=_benchmark_figure(cells),
        phase_dilution=at,
    )


def _canary_figure(cells: list[dict], x: str, label, *, log_x: bool) -> str:
    """Members' exact extraction and the loss attack's AUC vs twins, per copy count."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for c in cells:
        levels = sorted(c["canaries"].values(), key=lambda r: r["copies"])
        xs = [r[x] for r in levels]
        for ax, key in zip(axes, ("exact", "auc_loss", "exposure")):
            ax.plot(xs, [r[key] for r in levels], marker="o", label=label(c))
    xlabel = "copies per million tokens trained" if x == "relative_frequency" else "copies"
    counts = sorted({r["copies"] for c in cells for r in c["canaries"].values()})
    for ax, ylabel in zip(
        axes, ("extracted verbatim (members)", "loss attack AUC vs twins", "exposure (bits)")
    ):
        if log_x:
            ax.set_xscale("log")
        if x == "copies":  # the copy counts themselves, not a log axis's crowded minor labels
            ax.set_xticks(counts, [str(n) for n in counts])
            ax.minorticks_off()
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].set_ylim(0.0, 1.02)
    axes[1].axhline(0.5, color="k", ls=":", lw=0.8)
    axes[0].legend(fontsize=7, loc="best")
    return to_data_uri(fig)


def _benchmark_figure(cells: list[dict]) -> str:
    """Accuracy (greedy exact match) on benchmark items vs copies, one line per cell."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for c in cells:
        rows = sorted(c["items"].values(), key=lambda r: r["copies"])
        ax.plot(
            [r["copies"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=c["label"]
        )
    ax.set_xscale("symlog", linthresh=1)
    ax.set(
        xlabel="copies in training (0: clean)",
        ylabel="accuracy (greedy exact match)",
        ylim=(-0.02, 1.02),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return to_data_uri(fig)
