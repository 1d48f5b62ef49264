"""The embedded default corpus: the running Python's own standard-library source.

It ships with every Python, so tests and the demo need no download. Test suites are left out.
"""

from __future__ import annotations

import functools
import hashlib
import random
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memaudit.errors import InputError

from .config import setting
from .texts import Skipped

# test suites, third-party packages, and "encodings" (near-identical codec tables)
_SKIP_PARTS = {
    "test",
    "tests",
    "idle_test",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "lib2to3",
    "turtledemo",
    "encodings",
}


def stdlib_files() -> list[Path]:
    """Sorted paths of the standard library's ``.py`` files, tests and third-party packages
    excluded.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [
        f
        for f in root.rglob("*.py")
        if not (_SKIP_PARTS & set(f.relative_to(root).parts[:-1]))
        and not f.name.startswith("test_")
    ]
    if not files:
        raise InputError(f"no standard-library source found under {root}")
    return sorted(files)


def stdlib_snippets(n: int, *, chars: int = 240, seed: int = 0) -> list[str]:
    """``n`` distinct, non-overlapping source snippets of about ``chars`` characters.

    Snippets start at a line boundary and end at the last line break before ``chars``, so
    they read as code; blank-ish ones are skipped. Every snippet of the library is cut, the
    pool is shuffled with ``seed``, and the first ``n`` are returned: any two slices are
    samples of the same distribution (members and non-members must not differ by which
    files they came from), and a longer request extends a shorter one, so ``[:k]`` and
    ``[k:]`` of two calls never overlap. Deterministic for a given seed and Python.
    """
    pool = list(_snippet_pool(chars))
    random.Random(seed).shuffle(pool)
    if len(pool) < n:
        raise InputError(f"the standard library yielded only {len(pool)} snippets, {n} asked for")
    return pool[:n]


@functools.lru_cache(maxsize=4)
def _snippet_pool(chars: int) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for f in stdlib_files():
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        pos = 0
        while pos < len(text):
            piece = text[pos : pos + chars]
            cut = piece.rfind("\n")
            piece = piece[:cut] if cut > chars // 2 else piece
            pos += max(len(piece), 1) + 1
            snippet = piece.strip("\n")
            if len(snippet.split()) >= 8:
                seen.setdefault(snippet)
    return tuple(seen)


@dataclass(frozen=True)
class Corpus:
    """Training documents as read, and the invalid records left out under ``skip_invalid``."""

    docs: list[str]
    skipped: list[Skipped]

    def digest(self) -> str:
        """Hash of the documents exactly as read (order and boundaries included), not of a path:
        edit one character of the corpus and the digest changes.
        """
        h = hashlib.sha256()
        for doc in self.docs:
            data = doc.encode("utf-8", errors="surrogatepass")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """What results.json records about the corpus."""
        return {
            "documents": len(self.docs),
            "characters": sum(map(len, self.docs)),
            "digest": self.digest(),
            "skipped": [s.to_dict() for s in self.skipped],
        }


def load_corpus(
    spec: str, *, max_chars: int | None = None, seed: int = 0, skip_invalid: bool = False
) -> Corpus:
    """Training documents from ``"stdlib"``, a folder of text files, a JSONL or txt file or parquet.

    Parameters
    ----------
    spec : str
        ``"stdlib"`` or a path (see ``memaudit.io.texts.read_texts``).
    max_chars : int or None, keyword-only
        Keep documents in order until they hold this many characters; the last one is cut,
        so the corpus holds exactly ``max_chars`` (or all there is). For ``stdlib`` the files
        are shuffled with ``seed`` first, so a slice mixes many modules.
    skip_invalid : bool, keyword-only
        Leave out invalid records (listed in ``Corpus.skipped``) instead of stopping at the
        first with its file and line.

    Raises
    ------
    InputError
        A path that does not exist or holds no text, or an invalid record (without
        ``skip_invalid``); the message names the file and line.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.txt"
    >>> _ = p.write_text("first document\\nsecond one\\n")
    >>> load_corpus(str(p), max_chars=20).docs
    ['first document', 'second']
    """
    from .texts import iter_texts

    if max_chars is not None and max_chars < 1:
        raise InputError(f"the corpus character budget must be >= 1, got {max_chars}")
    skipped: list[Skipped] = []
    if spec == "stdlib":
        files = stdlib_files()
        random.Random(seed).shuffle(files)
        docs: Iterable[str] = (f.read_text(encoding="utf-8", errors="replace") for f in files)
    else:
        docs = (r.text for r in iter_texts(spec, skip_invalid=skip_invalid, skipped=skipped))
    out, total = [], 0
    for doc in docs:
        if not doc.strip():
            continue
        if max_chars is not None and total + len(doc) >= max_chars:
            out.append(doc[: max_chars - total])
            break
        out.append(doc)
        total += len(doc)
    if not out:
        raise InputError("the corpus holds no text", path=spec)
    return Corpus(out, skipped)


@dataclass(frozen=True)
class SnippetsConfig:
    """Settings of ``memaudit corpus snippets``."""

    out: str = setting(help="JSONL file to write (fields: id, text).")
    n: int = setting(200, help="Snippets to write.")
    offset: int = setting(
        0, help="Skip this many first: two offsets give disjoint sets of one distribution."
    )
    chars: int = setting(240, help="About this many characters each, cut at line ends.")
    seed: int = setting(0, help="Seed of the shuffle (keep it when taking disjoint slices).")

    def __post_init__(self) -> None:
        if self.n < 1 or self.offset < 0:
            raise InputError("--n must be >= 1 and --offset >= 0")


def write_snippets(config: SnippetsConfig) -> int:
    """Write ``config.n`` snippets from ``config.offset`` on as id/text JSONL; how many were
    written.
    """
    from .texts import write_texts

    texts = stdlib_snippets(config.offset + config.n, chars=config.chars, seed=config.seed)[
        config.offset :
    ]
    write_texts(config.out, ((f"s{config.offset + i:05d}", t) for i, t in enumerate(texts)))
    return len(texts)


def corpus_chunks(docs: list[str], n: int, chars: int, *, what: str = "the corpus") -> list[str]:
    """``n`` pieces of about ``chars`` characters cut at line ends, spread evenly over the
    documents.

    >>> corpus_chunks(["a\\nb\\nc\\nd\\n"], 2, 4)
    ['a\\nb', 'c\\nd']
    """
    pieces = []
    for d in docs:
        pos = 0
        while pos < len(d):
            piece = d[pos : pos + chars]
            cut = piece.rfind("\n")
            at_line_end = cut > 0 and pos + chars < len(d)
            piece = piece[:cut] if at_line_end else piece
            pos += len(piece) + (1 if at_line_end else 0)  # the newline cut at, nothing else
            if piece.strip():
                pieces.append(piece.strip("\n"))
    if len(pieces) < 2:
        raise InputError(f"{what} is too small to cut into evaluation texts")
    keep = np.unique(np.linspace(0, len(pieces) - 1, min(n, len(pieces))).astype(int))
    return [pieces[i] for i in keep]


def stdlib_snippets_upto(total_chars: int, *, chars: int = 1000, seed: int = 0) -> list[str]:
    """The shuffled snippets of :func:`stdlib_snippets`, as many as hold ``total_chars``
    characters (all there are when the library holds fewer): a corpus of short documents in
    random order, so consecutive training sequences come from different files.
    """
    pool = list(_snippet_pool(chars))
    random.Random(seed).shuffle(pool)
    out, total = [], 0
    for snippet in pool:
        if total >= total_chars:
            break
        out.append(snippet)
        total += len(snippet)
    return out
