"""Output directories: checked before any work, marked as memaudit's, never a user's folder deleted.

Every command that writes a directory (a run dir, a model dir, an index) calls
``prepare_out_dir`` first. It refuses, with a one-line error:

- an ``--out`` that is an existing file;
- an ``--out`` that equals or contains one of the command's inputs (``--out runs`` for the
  model ``runs/m`` would put the model inside what the command may replace);
- an existing, non-empty directory that memaudit did not make for this kind of output,
  unless ``overwrite`` (``--overwrite``) is given;
- a directory that cannot be written.

A directory memaudit writes holds ``.memaudit.json``: its kind, and whether memaudit made it
(``owned``) or was let into a user's directory with ``--overwrite``. Directories made by
earlier versions, which have no marker, are recognised by the record file each kind writes
(``results.json``, ``memaudit_train.json``, ...). Only directories memaudit made are ever
replaced whole; a foreign one is written into, file by file, and nothing else in it is
touched, however often memaudit writes there.
"""

from __future__ import annotations

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


def made_by_memaudit(out: str | Path, kind: str) -> bool:
    """Whether ``out`` is a directory memaudit made for outputs of ``kind``."""
    out = Path(out)
    marker = out / MARKER
    if marker.is_file():
        try:
            record = json.loads(marker.read_text())
        except (ValueError, OSError):
            return False
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
        raise InputError(
            "holds files memaudit did not write; choose a new --out, or pass --overwrite to "
            "write into it",
            path=where,
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError
        if not (path / MARKER).is_file():
            write_marker(path, kind, owned=not foreign)  # a foreign dir never becomes ours
    except PermissionError:
        raise InputError("--out is not writable", path=where) from None
    return path


def write_marker(path: Path, kind: str, *, owned: bool = True) -> None:
    """Mark ``path`` as a memaudit output of ``kind`` (also inside temp dirs, before a rename)."""
    record = {"kind": kind, "owned": owned, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
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
        write_marker(tmp, kind, owned=False)  # a foreign dir never becomes ours
        for f in tmp.iterdir():
            f.replace(out / f.name)
        tmp.rmdir()
        return out
    for name in keep:
        if (out / name).exists():
            (out / name).rename(tmp / name)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
