"""The report of ``memaudit dataset-inference``."""

from __future__ import annotations

from pathlib import Path

from .figures import plt, to_data_uri
from .render import write_report


def write_dataset_inference_report(out_dir: Path, results: dict) -> Path:
    alpha = results["config"]["alpha"]
    curve = results["p_value_curve"]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot([c["n_suspect"] for c in curve], [max(c["p_value"], 1e-300) for c in curve], marker="o")
    ax.axhline(alpha, color="k", ls=":", label=f"alpha = {alpha:g}")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="suspect texts used",
        ylabel="p-value",
        title="How many texts are needed",
    )
    ax.legend(fontsize=8)
    curve_png = to_data_uri(fig)
    fp_png = None
    check = results["false_positive_check"]
    if check:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.hist(check["p_values"], bins=10, range=(0, 1), color="#7f8c8d")
        ax.set(
            xlabel="p-value",
            ylabel="repeats",
            title="Two halves of the validation set (should be flat)",
        )
        fp_png = to_data_uri(fig)
    path = write_report(
        out_dir,
        "dataset_inference.html",
        title="Dataset inference",
        results=results,
        curve_png=curve_png,
        fp_png=fp_png,
        weights=list(zip(results["features"], results["splits"]["mean_weights"])),
    )
    return path
