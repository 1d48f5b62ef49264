"""The run directory every command writes: results.json, scores.parquet, report.html.

``RunDir`` is the one lifecycle: begin (retire a previous run's ``results.json``), write the
scores, build the header, render the report, and write ``results.json`` last, so its
presence means the run finished and a run that fails can never look finished.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from memaudit.errors import InputError

from .atomic import atomic_output, write_text_atomic
from .outdir import prepare_out_dir

SCHEMA_VERSION = 1
RESERVED_COLUMNS = ("id", "label", "n_tokens", "source")
_PACKAGES = (
    "memaudit",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "scikit-learn",
    "pyarrow",
)


def environment() -> dict[str, Any]:
    """Versions of Python and the packages that decide the numbers, and memaudit's git commit."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "git_commit": _git_commit(),
        "platform": platform.platform(),
        "argv": sys.argv,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def config_dict(config: Any) -> dict[str, Any]:
    """A run's resolved settings as a dict: a config dataclass's ``to_dict()``, or a mapping."""
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def run_header(command: str, config: Any, models: dict[str, Any]) -> dict[str, Any]:
    """The part of results.json every command shares: schema, command, resolved config,
    environment, models.
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "config": config_dict(config),
        **environment(),
        "models": {role: m.describe() for role, m in models.items() if m is not None},
        "warnings": [],
        "notes": [],
    }


class RunDir:
    """One run of one command in one directory: ``begin`` -> scores -> header -> ``finish``.

    Examples
    --------
    >>> import tempfile
    >>> run = RunDir.begin(tempfile.mkdtemp(), "example", {"seed": 0})
    >>> results = {**run.header(), "answer": 42}
    >>> run.finish(results).name
    'results.json'
    """

    def __init__(self, path: Path, command: str, config: Any) -> None:
        self.path = path
        self.command = command
        self.config = config

    @classmethod
    def begin(
        cls, out_dir: str | Path, command: str, config: Any, *, overwrite: bool | None = None
    ) -> RunDir:
        """Create the dir and retire an old results.json, after every input was checked and
        before any output.

        A finished run of other settings is never replaced silently (a default ``--out``
        such as ``runs/extract`` would otherwise lose the last run): that takes
        ``overwrite`` (by default the config's own). Rerunning the same settings replaces it.
        """
        settings = config_dict(config)
        if overwrite is None:
            overwrite = bool(settings.get("overwrite", False))
        path = prepare_out_dir(
            out_dir, kind=f"run:{command}", inputs=input_paths(settings), overwrite=overwrite
        )
        if not overwrite and _finished_with_other_settings(path, settings):
            raise InputError(
                f"holds a finished {command} run with other settings (or of an older memaudit); "
                "choose another --out, or pass --overwrite to replace it",
                path=str(out_dir),
            )
        (path / "results.json").unlink(missing_ok=True)  # a failure must not look finished
        return cls(path, command, config)

    def write_scores(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> Path:
        return write_scores(self.path, columns)

    def header(self, models: dict | None = None) -> dict[str, Any]:
        return run_header(self.command, self.config, models or {})

    def finish(
        self, results: dict[str, Any], report: Callable[[Path, dict], Any] | None = None
    ) -> Path:
        """Render the report (when given) from ``results``, then write results.json: always the
        last file.
        """
        if report is not None:
            report(self.path, results)
        return write_results(self.path, results)


# where a run writes, caches and runs: no part of what its results mean
NOT_COMPARED = {"overwrite", "out", "cache_dir", "no_cache", "device", "report", "workers"}


def _finished_with_other_settings(path: Path, settings: dict[str, Any]) -> bool:
    try:
        earlier = json.loads((path / "results.json").read_text(encoding="utf-8"))["config"]
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError):
        return True  # unreadable: nothing says it is the same run
    if not isinstance(earlier, dict):
        return True

    def comparable(config: dict[str, Any]) -> Any:
        return jsonable({k: v for k, v in config.items() if k not in NOT_COMPARED})

    return bool(comparable(earlier) != comparable(settings))


def input_paths(settings: dict[str, Any]) -> list[str]:
    """The settings that name existing files or folders (the run's inputs), but not its outputs."""
    found = []
    for name, value in settings.items():
        if name in ("out", "cache_dir"):
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and v and Path(v).exists():
                found.append(v)
    return found


def write_results(out_dir: Path, results: dict[str, Any]) -> Path:
    path = Path(out_dir) / "results.json"
    write_text_atomic(path, json.dumps(jsonable(results), indent=2, sort_keys=False) + "\n")
    return path


def write_scores(out_dir: Path, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> Path:
    """One row per text. Columns of mixed Python types are stored as JSON strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for name, values in columns.items():
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[name] = pa.array([json.dumps(v, default=str) for v in values])
    path = Path(out_dir) / "scores.parquet"
    with atomic_output(path) as fh:
        pq.write_table(pa.table(arrays), fh)
    return path


def metadata_columns(metas: list[dict[str, Any]], taken: set[str]) -> dict[str, list]:
    """Every metadata key as a column (None where a record lacks it); clashing names get
    ``meta_``.
    """
    keys: dict[str, None] = {}
    for m in metas:
        keys.update(dict.fromkeys(m))
    out = {}
    for k in keys:
        name = k if k not in taken else f"meta_{k}"
        out[name] = [m.get(k) for m in metas]
    return out


def jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays to Python, non-finite floats to null, paths
    to str.
    """
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


class Timings:
    """``with timings("stage"):`` adds the stage's wall time; ``total`` covers them all."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.seconds[stage] = time.perf_counter() - t
        self.seconds["total"] = time.perf_counter() - self._start
