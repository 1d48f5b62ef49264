"""The embedded default corpus: the running Python's own standard-library source.

It ships with every Python, so tests and the demo need no download. Test suites are left out.
"""

from __future__ import annotations

import functools
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from memaudit.errors import InputError

from .config import setting

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


def load_corpus(spec: str, *, max_chars: int | None = None, seed: int = 0) -> list[str]:
    """Training documents from ``"stdlib"``, a folder of text files, a JSONL or txt file or parquet.

    ``max_chars`` keeps whole documents until the total reaches it (for ``stdlib`` the files
    are shuffled with ``seed`` first, so a slice mixes many modules).

    Raises
    ------
    InputError
        A path that does not exist or holds no text.
    """
    from .texts import read_texts

    if spec == "stdlib":
        files = stdlib_files()
        random.Random(seed).shuffle(files)
        docs = (f.read_text(encoding="utf-8", errors="replace") for f in files)
    else:
        docs = (
            r.text for r in read_texts(spec, skip_invalid=True).records
        )  # an empty file is no error in a corpus
    out, total = [], 0
    for doc in docs:
        if not doc.strip():
            continue
        out.append(doc)
        total += len(doc)
        if max_chars is not None and total >= max_chars:
            break
    if not out:
        raise InputError("the corpus holds no text", path=spec)
    return out


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
