"""The report of ``memaudit unlearn-eval``: every model side by side, and the calibration curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import plt, to_data_uri
from .render import write_report


def write_unlearn_report(out_dir: Path, results: dict) -> Path:
    models = results["evaluation"]
    path = write_report(
        out_dir,
        "unlearn.html",
        title="Unlearning: is it gone, and at what cost?",
        results=results,
        models=models,
        bars=_bars(models),
        tradeoff=_tradeoff(results["calibration"]) if results["calibration"]["methods"] else None,
    )
    return path


def _bars(models: dict) -> str:
    """Forget extraction, forget-vs-holdout AUC and retain NLL change per model, with CIs."""
    names = list(models)
    panels = [
        ("forget exact extraction", lambda m: m["forget"]["exact"]),
        (
            "MIA AUC, forget vs holdout (loss)",
            lambda m: {
                "value": m["mia"]["loss"]["value"],
                "ci": [m["mia"]["loss"]["ci_low"], m["mia"]["loss"]["ci_high"]],
            },
        ),
        (
            "retain NLL change (nats/token)",
            lambda m: m["retain"]["delta"] or {"value": 0.0, "ci": [0.0, 0.0]},
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    x = np.arange(len(names))
    for ax, (title, get) in zip(axes, panels):
        est = [get(models[n]) for n in names]
        v = np.array([e["value"] for e in est])
        err = np.array(
            [[e["value"] - e["ci"][0] for e in est], [e["ci"][1] - e["value"] for e in est]]
        )
        colors = [
            "#7f8c8d"
            if models[n]["kind"] == "original"
            else "#27ae60"
            if models[n]["kind"] == "retrained"
            else "#2980b9"
            for n in names
        ]
        ax.bar(x, v, yerr=np.clip(err, 0, None), color=colors, capsize=3)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[1].axhline(0.5, color="k", ls=":", lw=0.8)
    fig.tight_layout()
    return to_data_uri(fig)


def _tradeoff(calibration: dict) -> str:
    """Forget-vs-holdout AUC against retain NLL change along each method's run."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for name, c in calibration["methods"].items():
        pts = sorted(c["curve"], key=lambda p: p["retain_delta"])
        ax.plot(
            [p["retain_delta"] for p in pts], [p["mia_auc"] for p in pts], marker="o", label=name
        )
    ax.axvline(calibration["retain_budget"], color="k", ls=":", lw=0.8)
    ax.set(
        xlabel="retain NLL change (nats/token)",
        ylabel="MIA AUC forget vs holdout (loss)",
        title="trade-off along each run",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_data_uri(fig)
