"""The report of ``memaudit demo``: what the model kept of each planted canary, by repetitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import curves_figure, histogram_figure, roc_figure
from .render import write_report


def write_demo_report(out_dir: Path, results: dict, columns: dict[str, list]) -> Path:
    by_level = {int(k): v for k, v in results["summary"]["by_level"].items()}
    levels = sorted(by_level)
    col = lambda key: [by_level[lv][key] for lv in levels]  # noqa: E731
    figures = [
        curves_figure(
            levels,
            {"whole canary": col("exact"), "secret in output": col("secret_found")},
            xlabel="repetitions in training",
            ylabel="share of canaries",
            title="Verbatim extraction",
            logx=True,
        ),
        curves_figure(
            levels,
            {"member vs twin": col("recognition")},
            xlabel="repetitions in training",
            ylabel="accuracy",
            title="Recognition (2-way forced choice)",
            logx=True,
        ),
        curves_figure(
            levels,
            {"members": col("exposure"), "twins (never seen)": col("twins_exposure")},
            xlabel="repetitions in training",
            ylabel="bits",
            title="Exposure",
            logx=True,
        ),
        curves_figure(
            levels,
            {a: [by_level[lv]["auc"][a] for lv in levels] for a in results["attacks"]},
            xlabel="repetitions in training",
            ylabel="AUC",
            title="Membership inference, members vs twins",
            logx=True,
        ),
    ]
    aucs = {name: m["auc"]["value"] for name, m in results["metrics"].items()}
    labels = np.array(columns["member"], dtype=int)
    extracted = [
        {
            "level": columns["level"][i],
            "template": columns["template"][i],
            "parts": _highlight(columns["text"][i], columns["secret"][i]),
        }
        for i in np.argsort(-np.array(columns["level"]), kind="stable")
        if columns["member"][i] and columns["secret_found"][i]
    ]
    path = write_report(
        out_dir,
        "demo.html",
        title="What did the model memorize?",
        results=results,
        levels=levels,
        by_level=by_level,
        figures=figures,
        roc_png=roc_figure(results["roc"], aucs),
        loss_png=histogram_figure(
            np.array(columns["loss"], dtype=float), labels, "mean token log-likelihood"
        ),
        extracted=extracted,
    )
    return path


def _highlight(text: str, secret: str) -> tuple[str, str, str]:
    i = text.rfind(secret)
    return text[:i], secret, text[i + len(secret) :]
