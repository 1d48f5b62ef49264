"""What an API call returns: the run dir it wrote, read back as Python objects.

Every call writes the command's own run dir (``out=``, or a directory memaudit makes under the
system's temp dir); a :class:`Result` reads it: ``metrics`` and ``config`` from results.json,
``scores`` from scores.parquet, and ``save(dir)`` publishes a copy under the ``--out`` rules
(``io.outdir``). A model-writing call (train, unlearn) returns a :class:`ModelDir`.
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memaudit.errors import InputError
from memaudit.io.outdir import prepare_out_dir, publish_dir

# where each command's headline numbers sit in its results.json
METRICS_KEY = {
    "mia": "metrics",
    "extract": "rates",
    "overlap": "overlap",
    "unlearn-eval": "evaluation",
    "traps-detect": "pooled_grid",
}


@dataclass(frozen=True)
class Result:
    """One finished run.

    Attributes
    ----------
    command : str
        The command that ran (``mia``, ``extract``, ...).
    path : Path
        Its run dir (results.json, scores.parquet, report.html).
    config : dataclass
        The resolved config, the one the command line would have built.
    results : dict
        results.json, whole.
    """

    command: str
    path: Path
    config: Any
    results: dict

    @classmethod
    def read(cls, command: str, path: Path, config: Any) -> Result:
        return cls(command, path, config, json.loads((path / "results.json").read_text()))

    @property
    def metrics(self) -> Any:
        """The headline numbers with their CIs: mia's per attack (auc, tpr@1%fpr ... each with
        value, ci_low, ci_high), extract's rates, dataset inference's test, overlap's
        coverage, unlearn-eval's per-model evaluation.
        """
        key = METRICS_KEY.get(self.command)
        if key is not None:
            return self.results[key]
        if self.command == "dataset-inference":
            return {k: self.results[k] for k in ("p_value", "verdict")}
        return self.results

    @property
    def scores_table(self) -> Any:
        """scores.parquet as a pyarrow Table (one row per text)."""
        import pyarrow.parquet as pq

        path = self.path / "scores.parquet"
        if not path.is_file():
            raise InputError(f"{self.command} writes no scores.parquet", path=str(self.path))
        return pq.read_table(path)

    @property
    def scores(self) -> Any:
        """scores.parquet as a pandas DataFrame (one row per text, the file's columns)."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise InputError(
                "Result.scores needs pandas: pip install 'memaudit[pandas]' (or use "
                "Result.scores_table, a pyarrow Table)"
            ) from None
        return self.scores_table.to_pandas()

    def save(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """Copy the run dir to ``out`` under the ``--out`` rules (a non-empty directory memaudit
        did not make needs ``overwrite``); returns ``out``.
        """
        return _publish_copy(self.path, Path(out), f"run:{self.command}", overwrite)

    def summary_rows(self) -> list[tuple[str, ...]]:
        """The table ``_repr_html_`` shows: a header, then one row per attack (mia) or per
        number.
        """
        if self.command == "mia":
            rows: list[tuple[str, ...]] = [("attack", "AUC [95% CI]", "TPR@1%FPR", "TPR@0.1%FPR")]
            ranked = sorted(self.metrics.items(), key=lambda kv: -kv[1]["auc"]["value"])
            for name, m in ranked:
                rows.append(
                    (name, _interval(m["auc"]), _tpr(m["tpr@1%fpr"]), _tpr(m["tpr@0.1%fpr"]))
                )
            return rows
        return [("measure", "value"), *_flat(self.metrics)]

    def _repr_html_(self) -> str:
        head, *body = self.summary_rows()
        table = "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>".format(
            "".join(f"<th>{html.escape(c)}</th>" for c in head),
            "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in body
            ),
        )
        figure = ""
        if "roc" in self.results:
            from memaudit.report.figures import roc_figure

            aucs = {k: m["auc"]["value"] for k, m in self.results["metrics"].items()}
            uri = roc_figure(self.results["roc"], aucs)  # a base64 PNG: shows with no network
            figure = f'<img src="{uri}" alt="ROC curves" style="max-width:100%">'
        title = html.escape(f"memaudit {self.command}: {self.path}")
        return f"<div><p><b>{title}</b></p>{table}{figure}</div>"


@dataclass(frozen=True)
class ModelDir:
    """A model dir a call wrote (``train``, ``unlearn``): its path, its record, its config."""

    command: str
    path: Path
    config: Any
    record: dict

    def save(self, out: str | Path, *, overwrite: bool = False) -> Path:
        """Copy the model dir to ``out`` under the ``--out`` rules; returns ``out``."""
        return _publish_copy(self.path, Path(out), f"model:{self.command}", overwrite)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
            for k, v in _flat({k: v for k, v in self.record.items() if k in SHOWN})
        )
        title = html.escape(f"memaudit {self.command}: {self.path}")
        return f"<div><p><b>{title}</b></p><table>{rows}</table></div>"


SHOWN = ("method", "steps", "model", "final_loss", "fingerprint", "data", "seconds")


def _publish_copy(src: Path, out: Path, kind: str, overwrite: bool) -> Path:
    prepare_out_dir(out, kind=kind, inputs=[src], overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    shutil.rmtree(tmp)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(".memaudit.json"))
    return publish_dir(tmp, out, kind)


def _interval(e: dict) -> str:
    return f"{e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"


def _tpr(e: dict) -> str:
    return f"{e['value']:.3f}" if e.get("supported", True) else "n/a"


def _flat(d: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """Scalars of a nested dict as ``(a.b.c, value)`` rows, three levels deep at most."""
    if isinstance(d, dict) and depth < 3:
        rows: list[tuple[str, str]] = []
        for k, v in d.items():
            rows += _flat(v, f"{prefix}{k}.", depth + 1)
        return rows
    if isinstance(d, float):
        return [(prefix.rstrip("."), f"{d:.4g}")]
    if isinstance(d, int | str | bool) or d is None:
        return [(prefix.rstrip("."), str(d))]
    return []
