"""Jinja2 rendering with the package's templates."""

from __future__ import annotations

import json

import jinja2

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("memaudit.report", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


def _ci(est: dict) -> str:
    if not est.get("supported", True):  # an FPR the non-members cannot show (see the notes)
        return "n/a"
    return f"{est['value']:.3f} [{est['ci_low']:.3f}, {est['ci_high']:.3f}]"


def _pretty_json(obj) -> str:
    return json.dumps(obj, indent=2)


_ENV.filters["ci"] = _ci
_ENV.filters["pretty_json"] = _pretty_json  # base.html shows every run's resolved config with it


def render(template: str, **context) -> str:
    return _ENV.get_template(template).render(**context)


def write_report(out_dir, template: str, **context):
    """Render ``template`` into ``out_dir/report.html`` (atomically); returns its path."""
    from pathlib import Path

    from memaudit.io.atomic import write_text_atomic

    path = Path(out_dir) / "report.html"
    write_text_atomic(path, render(template, **context))
    return path
