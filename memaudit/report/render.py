"""Jinja2 rendering with the package's templates."""

from __future__ import annotations

import jinja2

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("memaudit.report", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


def _ci(est: dict) -> str:
    return f"{est['value']:.3f} [{est['ci_low']:.3f}, {est['ci_high']:.3f}]"


_ENV.filters["ci"] = _ci


def render(template: str, **context) -> str:
    return _ENV.get_template(template).render(**context)


def write_report(out_dir, template: str, **context):
    """Render ``template`` into ``out_dir/report.html`` (atomically); returns its path."""
    from pathlib import Path

    from ..atomic import write_text_atomic

    path = Path(out_dir) / "report.html"
    write_text_atomic(path, render(template, **context))
    return path
