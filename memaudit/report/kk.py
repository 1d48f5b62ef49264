"""The report of ``memaudit probe kk run``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import plt, to_data_uri
from .render import write_report


def write_kk_report(out_dir: Path, results: dict) -> Path:
    path = write_report(
        out_dir,
        "kk.html",
        title="Knights and Knaves: reasoning or reciting?",
        results=results,
        figure=_figure(results),
    )
    return path


def _figure(results: dict) -> str:
    kinds = list(results["perturbations"])
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    x = np.arange(len(kinds))
    for offset, key, label in (
        (-0.2, "perturbed_accuracy", "accuracy after perturbation"),
        (0.2, "limem", "LiMem"),
    ):
        est = [results["perturbations"][k][key] for k in kinds]
        v = np.array([e["value"] for e in est])
        err = np.clip(
            np.array(
                [[e["value"] - e["ci"][0] for e in est], [e["ci"][1] - e["value"] for e in est]]
            ),
            0,
            None,
        )
        ax.bar(x + offset, v, 0.4, yerr=err, capsize=3, label=label)
    ax.axhline(results["accuracy"], color="k", ls=":", lw=1, label="accuracy on the originals")
    ax.set_xticks(x, kinds)
    ax.set(ylim=(0, 1.05), ylabel="share of puzzles")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return to_data_uri(fig)
