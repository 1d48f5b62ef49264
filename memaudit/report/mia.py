"""The report of ``memaudit mia``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import histogram_figure, roc_figure
from .render import write_report


def write_mia_report(out_dir: Path, results: dict, columns: dict[str, list]) -> Path:
    labels = np.array(columns["label"])
    metrics = results["metrics"]
    aucs = {name: m["auc"]["value"] for name, m in metrics.items()}
    ranked = sorted(metrics, key=lambda n: -aucs[n])
    path = write_report(
        out_dir,
        "mia.html",
        title="Membership inference",
        results=results,
        ranked=ranked,
        roc_png=roc_figure(results["roc"], aucs),
        histograms=[
            (n, histogram_figure(np.array(columns[n], dtype=float), labels, n)) for n in ranked
        ],
    )
    return path
