"""A suffix-array index over a tokenized corpus: how often, and where, does a token span occur?

The corpus is stored as one array of token ids with a separator between documents (so no
match can cross a document boundary) plus each document's start; the suffix array
(libdivsufsort through ``pydivsufsort``) sorts every suffix. All suffixes that begin with a
query span sit in one contiguous range of it, found by two binary searches, so ``count``
costs O(m log N) token comparisons and ``locate`` reads positions off that range.

On disk (``save``/``load``): ``tokens.npy``, ``sa.npy``, ``doc_starts.npy`` (plain numpy,
loaded memory-mapped and without pickle) and ``index.json`` (format version, tokenizer
fingerprint, sizes), written last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import atomic_output, write_text_atomic
from .errors import InputError

FORMAT_VERSION = 1
SEPARATOR = np.iinfo(np.uint32).max  # never a token id


@dataclass(frozen=True)
class Span:
    start: int  # position in the query
    length: int
    count: int  # occurrences in the corpus
    docs: list[int]  # ids of (up to a cap of) the documents holding it


class SuffixIndex:
    """Count, locate and longest-match queries over token sequences of one corpus."""

    def __init__(self, tokens: np.ndarray, sa: np.ndarray, doc_starts: np.ndarray, *, tokenizer: str | None = None):
        self.tokens, self.sa, self.doc_starts, self.tokenizer = tokens, sa, doc_starts, tokenizer

    @classmethod
    def build(cls, docs: Sequence[Sequence[int]], *, tokenizer: str | None = None) -> "SuffixIndex":
        """Index tokenized documents (each a sequence of non-negative ids below 2**32 - 1)."""
        import pydivsufsort

        lengths = np.array([len(d) for d in docs], dtype=np.int64)
        doc_starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
        tokens = np.full(int(lengths.sum() + len(docs)), SEPARATOR, dtype=np.uint32)
        for start, d in zip(doc_starts, docs):
            tokens[start : start + len(d)] = d
        sa = pydivsufsort.divsufsort(tokens).astype(np.int64)
        return cls(tokens, sa, doc_starts, tokenizer=tokenizer)

    def __len__(self) -> int:
        return len(self.tokens) - len(self.doc_starts)  # corpus tokens, separators excluded

    def _range(self, query: np.ndarray) -> tuple[int, int]:
        """[lo, hi) of the suffix array: the suffixes that start with ``query``."""
        m = len(query)
        tokens, sa = self.tokens, self.sa

        def prefix(i: int) -> tuple:
            return tuple(tokens[sa[i] : sa[i] + m])

        q = tuple(int(x) for x in query)
        lo, hi = 0, len(sa)
        while lo < hi:  # first suffix >= query
            mid = (lo + hi) // 2
            if prefix(mid) < q:
                lo = mid + 1
            else:
                hi = mid
        start, hi = lo, len(sa)
        while lo < hi:  # first suffix whose first m tokens are > query
            mid = (lo + hi) // 2
            if prefix(mid) <= q:
                lo = mid + 1
            else:
                hi = mid
        return start, lo

    def count(self, query: Sequence[int]) -> int:
        """Occurrences of the token sequence in the corpus (0 for an empty query)."""
        q = np.asarray(query, dtype=np.int64)
        if len(q) == 0:
            return 0
        lo, hi = self._range(q)
        return hi - lo

    def locate(self, query: Sequence[int], *, limit: int = 100) -> list[tuple[int, int]]:
        """(document id, offset in that document) of up to ``limit`` occurrences, sorted."""
        q = np.asarray(query, dtype=np.int64)
        if len(q) == 0:
            return []
        lo, hi = self._range(q)
        positions = np.sort(self.sa[lo : min(hi, lo + limit)])
        docs = np.searchsorted(self.doc_starts, positions, side="right") - 1
        return [(int(d), int(p - self.doc_starts[d])) for d, p in zip(docs, positions)]

    def longest(self, query: Sequence[int]) -> list[int]:
        """For each position of the query, the length of the longest span starting there that occurs."""
        q = np.asarray(query, dtype=np.int64)
        out = []
        for i in range(len(q)):
            lo_len, hi_len = 0, len(q) - i  # binary search: occurrence is monotone in length
            while lo_len < hi_len:
                mid = (lo_len + hi_len + 1) // 2
                if self.count(q[i : i + mid]):
                    lo_len = mid
                else:
                    hi_len = mid - 1
            out.append(lo_len)
        return out

    def overlap(self, query: Sequence[int], *, min_tokens: int = 8, doc_limit: int = 5) -> dict:
        """How much of a text is copied from the corpus: the share of its tokens inside spans of
        at least ``min_tokens`` tokens found verbatim, the maximal such spans with source
        documents, and the longest span."""
        q = list(query)
        lengths = self.longest(q)
        covered = np.zeros(len(q), dtype=bool)
        spans, reach = [], 0
        for i, n in enumerate(lengths):
            if n >= min_tokens and i + n > reach:  # not inside a span already listed
                covered[i : i + n] = True
                docs = sorted({d for d, _ in self.locate(q[i : i + n], limit=doc_limit)})
                spans.append(Span(i, n, self.count(q[i : i + n]), docs))
                reach = i + n
        return {
            "coverage": float(covered.mean()) if len(q) else 0.0,
            "longest": max(lengths, default=0),
            "spans": [s.__dict__ for s in spans],
        }

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "index.json").unlink(missing_ok=True)
        for name in ("tokens", "sa", "doc_starts"):
            with atomic_output(out / f"{name}.npy") as fh:
                np.save(fh, getattr(self, name), allow_pickle=False)
        meta = {"format_version": FORMAT_VERSION, "tokenizer": self.tokenizer, "tokens": len(self), "documents": len(self.doc_starts)}
        write_text_atomic(out / "index.json", json.dumps(meta, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path) -> "SuffixIndex":
        p = Path(path)
        if not (p / "index.json").is_file():
            raise InputError("not a finished memaudit index (no index.json)", path=str(p))
        meta = json.loads((p / "index.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise InputError(f"index format {meta.get('format_version')}, this memaudit reads {FORMAT_VERSION}", path=str(p))
        arrays = {n: np.load(p / f"{n}.npy", mmap_mode="r", allow_pickle=False) for n in ("tokens", "sa", "doc_starts")}
        return cls(arrays["tokens"], arrays["sa"], arrays["doc_starts"], tokenizer=meta.get("tokenizer"))
