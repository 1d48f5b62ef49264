"""The report of ``memaudit edit-eval``: one row per edited model."""

from __future__ import annotations

from pathlib import Path

from .render import write_report


def write_edit_report(out_dir: Path, results: dict) -> Path:
    return write_report(out_dir, "editing.html", title="Model editing evaluation", results=results)
