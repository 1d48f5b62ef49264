"""The report of ``memaudit extract``."""

from __future__ import annotations

from pathlib import Path

from .figures import curves_figure
from .render import write_report

MAX_EXAMPLES = 50


def write_extract_report(out_dir: Path, results: dict, columns: dict[str, list]) -> Path:
    by_group = results["rates"].get("by_group", {})
    figure = None
    if by_group:
        keys = list(by_group)
        x = [float(k) for k in keys] if all(_is_number(k) for k in keys) else keys
        series = {name: [by_group[k][name]["value"] for k in keys] for name in ("exact", "loose")}
        series["token_match"] = [by_group[k]["token_match"] for k in keys]
        figure = curves_figure(
            x,
            series,
            xlabel=results["config"]["group_by"],
            ylabel="rate",
            title="extraction by group",
        )
    rows = [i for i, e in enumerate(columns["exact"]) if e][:MAX_EXAMPLES]
    examples = [
        {k: columns[k][i] for k in ("id", "prefix", "generated", "token_match")} for i in rows
    ]
    path = write_report(
        out_dir,
        "extract.html",
        title="Verbatim extraction",
        results=results,
        by_group=by_group,
        figure=figure,
        examples=examples,
    )
    return path


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
