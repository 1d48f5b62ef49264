"""Reading texts: JSONL, .txt, a folder of files, or parquet, validated once at the edge.

Every reader returns :class:`TextRecord` objects that remember where they came from
(file and line), so that any later problem with a record can be reported as ``file:line``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from memaudit.errors import InputError

JSONL_SUFFIXES = {".jsonl", ".ndjson"}
PARQUET_SUFFIXES = {".parquet", ".pq"}


@dataclass(frozen=True)
class TextRecord:
    """One text and what we know about it.

    ``label`` is 1 for a member, 0 for a non-member and None when unknown.
    ``meta`` holds every other field of the input record (e.g. ``repetitions``).
    """

    id: str
    text: str
    label: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    line: int | None = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.path is not None else self.id


@dataclass(frozen=True)
class Skipped:
    """An invalid record left out under ``skip_invalid``; kept for results.json."""

    path: str
    line: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "reason": self.reason}


@dataclass(frozen=True)
class Fields:
    """Which fields of a JSONL/parquet record hold the text and, in a file that holds both
    classes, the label (1 member, 0 non-member; ``true``/``false`` too).
    """

    text: str = "text"
    label: str | None = None


@dataclass(frozen=True)
class ReadResult:
    records: list[TextRecord]
    skipped: list[Skipped]


def text_hash(text: str) -> str:
    """Content hash of a text; the key of the score cache and of overlap checks."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_texts(
    path: str | Path,
    *,
    label: int | None = None,
    skip_invalid: bool = False,
    fields: Fields = Fields(),
) -> ReadResult:
    """Read texts from a JSONL, txt or parquet file, or from a folder (one document per file).

    Parameters
    ----------
    path : str or Path
        ``*.jsonl`` (one JSON object per line with a ``text`` field; optional ``id``; every
        other field becomes metadata), ``*.txt`` (one document per line), ``*.parquet``
        (a ``text`` column) or a directory (each regular file is one document).
    label : int or None, keyword-only
        Label given to every record (1 member, 0 non-member).
    skip_invalid : bool, keyword-only
        Leave out invalid records and list them in ``ReadResult.skipped`` instead of raising.
    fields : Fields, keyword-only
        The text field of JSONL/parquet records (default ``text``) and, for a file holding
        both classes, the label field (each record's label then comes from it, 0 or 1).

    Raises
    ------
    InputError
        A missing file, malformed JSON, a record without a non-empty ``text``, a label other
        than 0/1, or a file without any text; the message names the file and line.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.jsonl"
    >>> _ = p.write_text('{"text": "hello", "kind": "greeting"}\\n')
    >>> r = read_texts(p, label=1)
    >>> r.records[0].text, r.records[0].meta
    ('hello', {'kind': 'greeting'})
    """
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or directory", path=str(path))
    reader = _pick_reader(p, fields)
    records: list[TextRecord] = []
    skipped: list[Skipped] = []
    for item in reader(p, label):
        if isinstance(item, InputError):
            if not skip_invalid:
                raise item
            skipped.append(Skipped(item.path or str(p), item.line, item.reason))
        else:
            records.append(item)
    if not records:
        raise InputError("no valid texts in this input", path=str(path))
    return ReadResult(records, skipped)


Parsed = TextRecord | InputError  # readers yield errors rather than raise them, for skip_invalid
Reader = Callable[[Path, int | None], Iterator[Parsed]]


def read_items(
    name: str,
    items: Sequence[Any],
    *,
    label: int | None = None,
    skip_invalid: bool = False,
    fields: Fields = Fields(),
) -> ReadResult:
    """``read_texts`` for texts already in memory (the Python API): strings, or dicts read as
    JSONL records are (a ``text`` field, optional ``id``, every other field metadata).

    A problem is named by ``name`` and position: ``members[3]: missing 'text' field``. A
    record without an ``id`` gets ``name[i]``.

    Examples
    --------
    >>> r = read_items("members", ["hello", {"text": "world", "kind": "greeting"}], label=1)
    >>> [(x.id, x.text, x.meta) for x in r.records]
    [('members[0]', 'hello', {}), ('members[1]', 'world', {'kind': 'greeting'})]
    """
    records: list[TextRecord] = []
    skipped: list[Skipped] = []
    for i, obj in enumerate(items):
        where = f"{name}[{i}]"
        if isinstance(obj, str) and fields.label is None:
            obj = {fields.text: obj}
        item = (
            _record_from_fields(obj, Path(where), None, label, fields, where=where)
            if isinstance(obj, dict)
            else InputError(
                f"expected a string or a dict with a '{fields.text}' field, got "
                f"{type(obj).__name__}",
                path=where,
            )
        )
        if isinstance(item, InputError):
            if not skip_invalid:
                raise item
            skipped.append(Skipped(where, None, item.reason))
        else:
            records.append(item)
    if not records:
        raise InputError("no valid texts in this input", path=name)
    return ReadResult(records, skipped)


def iter_texts(
    path: str | Path, *, skip_invalid: bool = False, skipped: list[Skipped] | None = None
) -> Iterator[TextRecord]:
    """Yield the records of ``read_texts`` one at a time (for corpora too big to hold as a list).

    Invalid records raise, or with ``skip_invalid`` are appended to ``skipped`` (when given).
    """
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or directory", path=str(path))
    for item in _pick_reader(p, Fields())(p, None):
        if isinstance(item, InputError):
            if not skip_invalid:
                raise item
            if skipped is not None:
                skipped.append(Skipped(item.path or str(p), item.line, item.reason))
        else:
            yield item


def jsonl_objects(path: str | Path, *, what: str = "file") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file; bad JSON or a non-object
    names file and line.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} not found", path=str(p))
    for lineno, raw in numbered_lines(p):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON ({e.msg})", path=str(p), line=lineno) from None
        if not isinstance(obj, dict):
            raise InputError("each line must be a JSON object", path=str(p), line=lineno)
        yield lineno, obj


def write_texts(path: str | Path, items: Iterable[tuple[str, str]]) -> Path:
    """Write ``(id, text)`` pairs as JSONL with ``id`` and ``text`` fields, atomically;
    ``read_texts`` reads it back.
    """
    from .atomic import write_text_atomic

    write_text_atomic(path, "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in items))
    return Path(path)


def _pick_reader(p: Path, fields: Fields) -> Reader:
    suffix = p.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return partial(_read_jsonl, fields=fields)
    if suffix in PARQUET_SUFFIXES:
        return partial(_read_parquet, fields=fields)
    if fields != Fields():
        what = "a folder" if p.is_dir() else f"a {suffix or p.name} file"
        raise InputError(f"named record fields need .jsonl or .parquet, not {what}", path=str(p))
    if p.is_dir():
        return _read_folder
    if suffix == ".txt":
        return _read_txt
    raise InputError(
        f"unknown input format '{suffix or p.name}'; use .jsonl, .txt, .parquet or a folder",
        path=str(p),
    )


def _read_jsonl(p: Path, label: int | None, *, fields: Fields) -> Iterator[Parsed]:
    for lineno, raw in _decoded_lines(p):
        if isinstance(raw, InputError):
            yield raw
            continue
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            yield InputError(
                f"malformed JSON ({e.msg} at column {e.colno})", path=str(p), line=lineno
            )
            continue
        if not isinstance(obj, dict):
            yield InputError(
                f"expected a JSON object with a '{fields.text}' field", path=str(p), line=lineno
            )
            continue
        yield _record_from_fields(obj, p, lineno, label, fields)


def _read_parquet(p: Path, label: int | None, *, fields: Fields) -> Iterator[Parsed]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow raises several unrelated types for a corrupt file
        raise InputError(f"cannot read parquet ({e})", path=str(p)) from e
    for name in (fields.text, fields.label):
        if name is not None and name not in table.column_names:
            raise InputError(
                f"no '{name}' column (columns: {', '.join(table.column_names)})", path=str(p)
            )
    for row, obj in enumerate(table.to_pylist(), start=1):
        yield _record_from_fields(obj, p, row, label, fields)


def _read_txt(p: Path, label: int | None) -> Iterator[Parsed]:
    for lineno, raw in _decoded_lines(p):
        if isinstance(raw, InputError):
            yield raw
            continue
        text = raw.rstrip("\r\n")
        if text.strip():
            yield TextRecord(
                id=f"{p.stem}:{lineno}", text=text, label=label, path=str(p), line=lineno
            )


def _read_folder(p: Path, label: int | None) -> Iterator[Parsed]:
    files = sorted(
        f
        for f in p.rglob("*")
        if f.is_file() and not any(x.startswith(".") for x in f.relative_to(p).parts)
    )
    for f in files:
        rel = str(f.relative_to(p))
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            yield InputError("not UTF-8 text", path=str(f))
            continue
        if not text.strip():
            yield InputError("empty text", path=str(f))
            continue
        yield TextRecord(id=rel, text=text, label=label, path=str(f), line=None)


def _record_from_fields(
    obj: dict[str, Any],
    p: Path,
    lineno: int | None,
    label: int | None,
    fields: Fields,
    *,
    where: str | None = None,
) -> Parsed:
    """One record from a JSONL/parquet object (``p:lineno``), or from an object in memory
    (``where``: ``members[3]``, its id and its place in errors; the record then has no path).
    """
    key = fields.text
    bad = partial(InputError, path=str(p), line=lineno)
    if key not in obj:
        return bad(f"missing '{key}' field")
    text = obj[key]
    if not isinstance(text, str):
        return bad(f"'{key}' must be a string, got {type(text).__name__}")
    if not text.strip():
        return bad("empty text")
    if fields.label is not None:
        parsed = _label(obj.get(fields.label, _MISSING))
        if parsed is None:
            got = "nothing" if fields.label not in obj else repr(obj[fields.label])
            return bad(f"label field '{fields.label}' must be 0 or 1, got {got}")
        label = parsed
    rid = obj.get("id")
    rid = (where or f"{p.stem}:{lineno}") if rid is None else str(rid)
    meta = {k: v for k, v in obj.items() if k not in (key, fields.label, "id")}
    if where is not None:
        return TextRecord(id=rid, text=text, label=label, meta=meta)
    return TextRecord(id=rid, text=text, label=label, meta=meta, path=str(p), line=lineno)


_MISSING = object()


def _label(value: Any) -> int | None:
    """0 or 1 from an int, a bool or an integral float; anything else is None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    return None


def numbered_lines(p: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line of a UTF-8 file, read as it goes.

    Raises
    ------
    InputError
        A line that is not UTF-8, named by file and line (a whole-file decode would say
        only the byte offset, and only after reading it all).
    """
    for lineno, line in _decoded_lines(p):
        if isinstance(line, InputError):
            raise line
        yield lineno, line


def _decoded_lines(p: Path) -> Iterator[tuple[int, str | InputError]]:
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                where = f"byte {e.start + 1} of the line"
                yield lineno, InputError(f"not UTF-8 text ({where})", path=str(p), line=lineno)
