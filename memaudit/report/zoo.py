"""The report of ``memaudit probe recall-sweep``: MQAR recall against recurrent state (BASED's
Pareto figure), against pairs and length at a comparable state, and training cost per arch.
"""

from __future__ import annotations

import math
from pathlib import Path

from .figures import plt, to_data_uri
from .render import write_report


def pareto_points(cells: list[dict], length: int) -> dict[str, list[tuple[float, float, str]]]:
    """Per arch: (state floats at ``length``, mean accuracy over the grid, cell label), by
    state.
    """
    out: dict[str, list[tuple[float, float, str]]] = {}
    for c in cells:
        if c["mean_accuracy"] is None:
            continue
        out.setdefault(c["arch"], []).append(
            (c["state_floats"][str(length)], c["mean_accuracy"], c["label"])
        )
    return {a: sorted(p) for a, p in out.items()}


def reference_state(cells: list[dict], length: int) -> float:
    """The state the "at fixed state" plots compare at: the geometric median of the cells'
    states at ``length`` (attention's included).
    """
    logs = sorted(math.log(c["state_floats"][str(length)]) for c in cells)
    return math.exp(logs[(len(logs) - 1) // 2])


def nearest_cells(cells: list[dict], length: int) -> dict[str, dict]:
    """Per arch, its cell whose state at ``length`` is nearest the reference state (in log
    scale; a tie goes to the larger state).
    """
    ref = math.log(reference_state(cells, length))
    out: dict[str, dict] = {}
    for c in cells:
        s = math.log(c["state_floats"][str(length)])
        best = out.get(c["arch"])
        if best is None:
            out[c["arch"]] = c
            continue
        b = math.log(best["state_floats"][str(length)])
        if (abs(s - ref), -s) < (abs(b - ref), -b):
            out[c["arch"]] = c
    return out


def write_zoo_report(out_dir: Path, results: dict, *, lengths: list, pairs: list) -> Path:
    cells = results["cells"]
    longest = max(lengths)
    fits_all = [D for D in pairs if 4 * D <= min(lengths)]
    at_pairs = max(fits_all) if fits_all else None
    near = nearest_cells(cells, longest)
    cost = cost_table(cells)
    return write_report(
        out_dir,
        "zoo.html",
        title="Recall vs state: MQAR across the sequence-model zoo",
        results=results,
        lengths=lengths,
        pairs=pairs,
        longest=longest,
        at_pairs=at_pairs,
        reference_state=reference_state(cells, longest),
        near=near,
        cost=cost,
        pareto=_pareto_figure(pareto_points(cells, longest), longest, results["chance"]),
        by_pairs=_series_figure(
            near,
            pairs,
            lambda c, D: c["grid"][f"{longest}x{D}"],
            xlabel="key-value pairs",
            title=f"length {longest}, state nearest {reference_state(cells, longest):,.0f} floats",
            chance=results["chance"],
            length=longest,
        ),
        by_length=_series_figure(
            near,
            lengths,
            lambda c, L: c["grid"][f"{L}x{at_pairs}"] if at_pairs else None,
            xlabel="sequence length (tokens)",
            title=f"{at_pairs} pairs, same cells",
            chance=results["chance"],
            length=longest,
        ),
    )


def cost_table(cells: list[dict]) -> list[dict]:
    """One row per cell: arch, width, state knob, parameters, state floats, training tokens/s."""
    return [
        {
            "label": c["label"],
            "arch": c["arch"],
            "d_model": c["d_model"],
            "state": c["state"],
            "parameters": c["parameters"],
            "state_floats": c["state_floats"],
            "tokens_per_s": c["training"]["tokens_per_s"],
            "train_seconds": c["training"]["seconds"],
            "mean_accuracy": c["mean_accuracy"],
        }
        for c in sorted(cells, key=lambda c: (c["arch"], c["d_model"], c["state"] or 0))
    ]


def _pareto_figure(points: dict, length: int, chance: float) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arch, pts in points.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=arch)
    ax.axhline(chance, color="k", ls=":", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set(
        xlabel=f"recurrent state (floats per sequence, at length {length})",
        ylabel="MQAR accuracy (mean over the grid)",
        ylim=(0, 1.02),
        title="Recall vs state size",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    return to_data_uri(fig)


def _series_figure(near: dict, xs: list, value, *, xlabel, title, chance, length) -> str:
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for arch, c in near.items():
        ys = [value(c, x) for x in xs]
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        label = f"{arch} (d{c['d_model']}, {c['state_floats'][str(length)]:,} floats)"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.axhline(chance, color="k", ls=":", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.minorticks_off()
    ax.set(xlabel=xlabel, ylabel="MQAR accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    return to_data_uri(fig)
