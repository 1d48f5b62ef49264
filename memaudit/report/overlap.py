"""The report of ``memaudit overlap``."""

from __future__ import annotations

from pathlib import Path

from .figures import curves_figure
from .render import write_report


def write_overlap_report(
    out_dir: Path, results: dict, columns: dict[str, list], *, highlights: list[dict]
) -> Path:
    by_len = results["overlap"]["coverage_by_span_length"]
    figure = curves_figure(
        [int(n) for n in by_len],
        {"mean coverage": list(by_len.values())},
        xlabel="minimum span length (tokens)",
        ylabel="share of generated tokens",
        title="copied verbatim from the corpus",
        logx=True,
    )
    examples = [
        {**h, "id": columns["id"][h["row"]], "sources": columns["sources"][h["row"]]}
        for h in highlights
    ]
    path = write_report(
        out_dir,
        "overlap.html",
        title="Verbatim overlap of generations with the training corpus",
        results=results,
        figure=figure,
        examples=examples,
    )
    return path
