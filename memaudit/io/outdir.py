"""Output directories: checked before any work, marked as memaudit's, never a user's folder deleted.

Every command that writes a directory (a run dir, a model dir, an index) calls
``prepare_out_dir`` first. It refuses, with a one-line error:

- an ``--out`` that is an existing file;
- an ``--out`` that equals or contains one of the command's inputs (``--out runs`` for the
  model ``runs/m`` would put the model inside what the command may replace);
- an existing, non-empty directory that memaudit did not make for this kind of output,
  unless ``overwrite`` (``--overwrite``) is given;
- a directory that cannot be written;
- with ``overwrite``, a directory memaudit did not make that already holds an entry whose name
  an output of this kind may have (``report.html``, ``model.safetensors``, ``model-*``...):
  memaudit would replace it, so the user moves it or chooses another ``--out``.

A directory memaudit writes holds ``.memaudit.json``: its kind, and whether memaudit made it
(``owned``) or was let into a user's directory with ``--overwrite``; then it also lists the
entries that were there first (``preexisting``), which no later run replaces either.
Directories made by earlier versions, which have no marker, are recognised by the record file
each kind writes (``results.json``, ``memaudit_train.json``, ...). Only directories memaudit
made are ever replaced whole; a foreign one is written into, file by file, and nothing that
was there before is touched, however often memaudit writes there.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from memaudit.errors import InputError

MARKER = ".memaudit.json"

# what an output of each kind held before markers existed (finished, or killed midway)
LEGACY_RECORDS = {
    "model:train": ("memaudit_train.json", "checkpoint-*/state.json"),
    "model:unlearn": ("memaudit_unlearn.json",),
    "model:diffusion": ("memaudit_diffusion.json", "train_set.json"),
    "model:mqar": ("memaudit_train.json",),
    "index": ("index.json", "shard-*/tokens.json"),
}


# The names an output of each kind may write at its top level (``fnmatch`` patterns; the kind's
# prefix before ":" selects the row). Kept complete by tests/test_outdir.py, which checks real
# outputs of every kind against it.
OUTPUT_NAMES = {
    "run": (
        "*.json", "*.jsonl", "*.parquet", "*.html", "*.png", "*.npz", "*.tmp",
        "prompts.txt", "labels.txt",
        "model", "models", "cache", "retrained", "step-*", "checkpoint*", "cells", "index",
    ),
    "model": (
        "*.json", "*.jsonl", "*.safetensors", "merges.txt", "vocab.txt", "*.model", "*.tmp",
        "*.jinja", "additional_chat_templates",
        "checkpoint*",
        "step-*", "replication", "adapter",
    ),
    "adapter": ("*.json", "*.safetensors", "README.md", "*.tmp"),
    "index": ("*.json", "*.tmp", "shard-*", "tokenizer"),
    "shadows": ("*.json", "*.jsonl", "*.npz", "*.tmp", "halves", "tokenizer", "model-*"),
}  # fmt: skip


def output_names(kind: str) -> tuple[str, ...]:
    """The top-level name patterns an output of ``kind`` may write."""
    return OUTPUT_NAMES[kind.split(":")[0]]


def clashes(out: Path, kind: str) -> list[str]:
    """Entries of the foreign directory ``out`` that were there before memaudit and whose
    names an output of ``kind`` may have: what writing into it would replace."""
    record = read_marker(out)
    first = record.get("preexisting") if record else None
    names = first if isinstance(first, list) else [p.name for p in out.iterdir()]
    patterns = output_names(kind)
    return sorted(
        n for n in names if n != MARKER and any(fnmatch.fnmatchcase(n, p) for p in patterns)
    )


def read_marker(out: Path) -> dict | None:
    try:
        record = json.loads((out / MARKER).read_text())
    except (ValueError, OSError):
        return None
    return record if isinstance(record, dict) else None


def made_by_memaudit(out: str | Path, kind: str) -> bool:
    """Whether ``out`` is a directory memaudit made for outputs of ``kind``."""
    out = Path(out)
    if (out / MARKER).is_file():
        record = read_marker(out) or {}
        return record.get("kind") == kind and record.get("owned", True) is True
    legacy = LEGACY_RECORDS.get(kind, ("results.json",) if kind.startswith("run:") else ())
    return any(next(out.glob(pattern), None) is not None for pattern in legacy)


def prepare_out_dir(
    out: str | Path, *, kind: str, inputs: Iterable[str | Path | None] = (), overwrite: bool = False
) -> Path:
    """Check ``out`` against the rules above, create it, and mark it as memaudit's ``kind``.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> prepare_out_dir(root / "run", kind="run:mia").name
    'run'
    >>> (root / "notes.txt").write_text("mine")
    4
    >>> prepare_out_dir(root, kind="run:mia")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    memaudit.errors.InputError: ...: holds files memaudit did not write; choose a new --out, ...
    """
    path = Path(out)
    where = str(out)
    if path.exists() and not path.is_dir():
        raise InputError("--out is an existing file, not a directory", path=where)
    resolved = path.resolve()
    for item in inputs:
        if item is None:
            continue
        src = Path(item).resolve()
        if src == resolved or resolved in src.parents:
            raise InputError(f"--out must not be or contain the input {item}", path=where)
    foreign = path.is_dir() and any(path.iterdir()) and not made_by_memaudit(path, kind)
    if foreign and not overwrite:
        raise InputError(_whose(path), path=where)
    if foreign and (taken := clashes(path, kind)):
        raise InputError(
            f"--overwrite would replace {', '.join(taken[:3])}{' ...' if len(taken) > 3 else ''}"
            ", which memaudit did not write; move it or choose a new --out",
            path=where,
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError
        if not (path / MARKER).is_file():
            # a foreign dir never becomes ours, and what was in it stays out of reach
            first = sorted(p.name for p in path.iterdir()) if foreign else None
            write_marker(path, kind, owned=not foreign, preexisting=first)
    except PermissionError:
        raise InputError("--out is not writable", path=where) from None
    return path


def _whose(path: Path) -> str:
    record = read_marker(path)
    if record and record.get("owned", True) is True and isinstance(record.get("kind"), str):
        return f"holds a memaudit {record['kind']} output, not this command's; choose a new --out"
    return (
        "holds files memaudit did not write; choose a new --out, or pass --overwrite to write "
        "into it"
    )


def write_marker(
    path: Path, kind: str, *, owned: bool = True, preexisting: list[str] | None = None
) -> None:
    """Mark ``path`` as a memaudit output of ``kind`` (also inside temp dirs, before a rename)."""
    record: dict = {"kind": kind, "owned": owned}
    if preexisting is not None:
        record["preexisting"] = preexisting
    record["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    (path / MARKER).write_text(json.dumps(record) + "\n")


def publish_dir(tmp: Path, out: Path, kind: str, *, keep: Sequence[str] = ()) -> Path:
    """Put the finished temp dir ``tmp`` (beside ``out``) in place as ``out``, marked ``kind``.

    A directory memaudit made for ``kind`` is replaced whole (``keep`` names its entries that move
    into the new one instead of being deleted with the old); into any other existing one (which
    the command let through with --overwrite) the new files are moved one by one, and nothing
    else in it is touched.
    """
    write_marker(tmp, kind)
    if out.exists() and not made_by_memaudit(out, kind) and any(out.iterdir()):
        if not (out / MARKER).is_file():  # entered without prepare_out_dir: mark it now
            write_marker(out, kind, owned=False, preexisting=sorted(p.name for p in out.iterdir()))
        first = (read_marker(out) or {}).get("preexisting") or []
        for f in tmp.iterdir():
            if f.name == MARKER:
                continue
            if f.name in first:  # prepare_out_dir refuses this first; never reached by a command
                raise InputError(
                    f"would replace {f.name}, which memaudit did not write", path=str(out)
                )
            if (out / f.name).is_dir():  # an earlier run's (it was not there first)
                shutil.rmtree(out / f.name)
            f.replace(out / f.name)
        shutil.rmtree(tmp)
        return out
    for name in keep:
        if (out / name).exists():
            (out / name).rename(tmp / name)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
