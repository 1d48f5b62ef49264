"""Suffix-array indexes over a tokenized corpus: how often, and where, does a token span occur?

A shard (:class:`SuffixIndex`) stores its documents as one array of token ids, each document
followed by a separator (the largest value of the token type, never a token id, so no match
crosses a document boundary), plus each document's start. Tokens are stored big-endian, so
comparing two token sequences is comparing their bytes: the suffix array is libdivsufsort's
byte suffix array (through ``pydivsufsort``) with the offsets inside a token dropped, and a
query is two binary searches of ``memcmp``-style ``bytes`` comparisons. ``count`` costs
O(m log N) byte comparisons; ``locate`` reads positions off the range found.

A :class:`CorpusIndex` is a list of shards over consecutive documents; every query fans out
over them and merges (counts add, positions concatenate in document order, longest matches
take the maximum), so a sharded index answers exactly like one built in a single piece.

A tokenizer-free index (``BYTES``) stores a document's UTF-8 bytes as its tokens, one byte
each (``u1``): the separator 0xFF never occurs in UTF-8, so it serves any text query and
every model.

Batched queries (``count_many``, ``prefix_match``, ``longest_many``) run the binary searches
of many queries at once, as numpy operations over all of them: each step gathers one window
of the corpus per query and compares it with the query's tokens, so the work per step is
vectorised instead of a Python loop per query.

On disk a shard is ``tokens.npy``, ``doc_starts.npy``, ``sa.npy`` (plain numpy, opened
memory-mapped and without pickle) and ``docs.json`` (the source id of each document); the
file layout of a whole index is in docs/index.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memaudit.errors import InputError
from memaudit.io.atomic import atomic_output, write_text_atomic

FORMAT_VERSION = 2
LOCATE_SCAN = 65_536  # suffix-array entries read to find the first occurrences in corpus order
SHARD_FILES = ("tokens", "doc_starts", "sa")
Queries = Sequence[Sequence[int]] | Sequence[np.ndarray]  # token lists or 1-d int arrays
BYTES = "bytes"  # ``index build --tokenizer bytes``: UTF-8 bytes as tokens
BYTES_FINGERPRINT = "bytes:utf-8"
BYTE_DTYPE = np.dtype("u1")  # separator 0xFF: never a byte of UTF-8
BATCH_ELEMENTS = 1 << 20  # query tokens compared per vectorised step (bounds its memory)
LONGEST_WIDTH = 64  # longest_many's vectorised window; longer matches are searched one by one


def token_dtype(max_token: int) -> np.dtype:
    """The narrowest big-endian type that holds ``max_token`` below its separator value."""
    for dt in (">u2", ">u4"):
        if max_token < np.iinfo(dt).max:
            return np.dtype(dt)
    raise InputError(f"token id {max_token} does not fit in 32 bits")


@dataclass(frozen=True)
class Span:
    start: int  # position in the query
    length: int
    count: int  # occurrences in the corpus
    docs: list[int]  # ids (global numbers) of up to a cap of the documents holding it


class _Queries:
    """``overlap`` and the argument checks shared by a shard and a sharded index."""

    # the three primitive queries each kind of index implements
    def count(self, query: Sequence[int]) -> int:
        raise NotImplementedError

    def locate(self, query: Sequence[int], *, limit: int = 100) -> list[tuple[int, int]]:
        raise NotImplementedError

    def longest(self, query: Sequence[int]) -> list[int]:
        raise NotImplementedError

    # their batched forms: one vectorised search over many queries
    def count_many(self, queries: Queries) -> np.ndarray:
        """(Q,) int64: ``count`` of every query, searched together."""
        raise NotImplementedError

    def prefix_match(self, queries: Queries) -> np.ndarray:
        """(Q,) int64: for every query, the length of its longest prefix that occurs (at most
        the query's length; ``longest(q)[0]`` when q is not empty).
        """
        raise NotImplementedError

    def match_keys(self, keys: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """``prefix_match`` of (K, W) int64 keys, the first ``lengths`` of each row meant."""
        raise NotImplementedError

    def longest_many(self, queries: Queries) -> list[list[int]]:
        """``longest`` of every query: each of its suffixes' ``prefix_match``, all searched
        together with a window of ``LONGEST_WIDTH`` tokens; the positions whose match fills
        the window are searched again with a window four times as wide, until none does.

        Examples
        --------
        >>> index = SuffixIndex.build([[5, 6, 7], [6, 7, 6, 7]])
        >>> index.longest_many([[6, 7, 6, 8], [9]]) == [index.longest([6, 7, 6, 8]), [0]]
        True
        """
        arrays = [np.asarray(q, dtype=np.int64).reshape(-1) for q in queries]
        out = [np.zeros(len(a), dtype=np.int64) for a in arrays]
        pending = [(k, np.arange(len(a))) for k, a in enumerate(arrays) if len(a)]
        width = LONGEST_WIDTH
        while pending:
            keys, lengths = [], []
            for k, at in pending:
                padded = np.concatenate([arrays[k], np.full(width, -1, dtype=np.int64)])
                keys.append(np.lib.stride_tricks.sliding_window_view(padded, width)[at])
                lengths.append(np.minimum(width, len(arrays[k]) - at))
            matched = self.match_keys(np.concatenate(keys), np.concatenate(lengths))
            again, row = [], 0
            for (k, at), m in zip(pending, lengths):
                got = matched[row : row + len(at)]
                row += len(at)
                out[k][at] = got
                more = at[(got == width) & (m == width)]  # filled the window: may go on
                if len(more):
                    again.append((k, more))
            pending, width = again, width * 4
        return [o.tolist() for o in out]

    def overlap(self, query: Sequence[int], *, min_tokens: int = 8, doc_limit: int = 5) -> dict:
        """How much of a text is copied from the corpus.

        Returns the share of the text's tokens inside spans of at least ``min_tokens`` tokens
        found verbatim (``coverage``), the maximal such spans with their source documents
        (``spans``), and the length of the longest span found (``longest``).

        Examples
        --------
        >>> index = SuffixIndex.build([[1, 2, 3, 4, 5], [9, 9]])
        >>> o = index.overlap([7, 2, 3, 4, 7], min_tokens=3)
        >>> o["coverage"], o["longest"], o["spans"][0]["docs"]
        (0.6, 3, [0])
        """
        q = [int(t) for t in query]
        return self.overlap_of(q, self.longest(q), min_tokens=min_tokens, doc_limit=doc_limit)

    def overlap_of(
        self, q: list[int], lengths: list[int], *, min_tokens: int = 8, doc_limit: int = 5
    ) -> dict:
        """``overlap`` from already computed ``longest(q)``."""
        if min_tokens < 1:
            raise InputError(f"min_tokens must be at least 1, got {min_tokens}")
        covered = np.zeros(len(q), dtype=bool)
        spans, reach = [], 0
        for i, n in enumerate(lengths):
            if n >= min_tokens and i + n > reach:  # a span not inside one already listed
                covered[i : i + n] = True
                docs = sorted({d for d, _ in self.locate(q[i : i + n], limit=doc_limit)})
                spans.append(Span(i, n, self.count(q[i : i + n]), docs))
                reach = i + n
        return {
            "coverage": float(covered.mean()) if q else 0.0,
            "longest": max(lengths, default=0),
            "spans": [s.__dict__ for s in spans],
        }


class SuffixIndex(_Queries):
    """Count, locate and longest-match queries over the token sequences of one shard.

    Examples
    --------
    >>> index = SuffixIndex.build([[5, 6, 7], [6, 7, 6, 7]])
    >>> index.count([6, 7]), index.locate([6, 7]), index.count([7, 6, 7, 5])
    (3, [(0, 1), (1, 0), (1, 2)], 0)
    >>> index.longest([6, 7, 6, 8])
    [3, 2, 1, 0]
    """

    def __init__(
        self, tokens: np.ndarray, sa: np.ndarray, doc_starts: np.ndarray, *, first_doc: int = 0
    ):
        self.tokens, self.sa, self.doc_starts, self.first_doc = tokens, sa, doc_starts, first_doc
        self.width = tokens.dtype.itemsize
        self.separator = int(np.iinfo(tokens.dtype).max)
        # numpy arrays are buffers; numpy's stubs do not say so
        as_bytes = tokens.view(np.uint8) if len(tokens) else b""
        self._bytes = memoryview(as_bytes)  # type: ignore[arg-type]
        self._sa = _int_view(sa)

    @classmethod
    def build(
        cls,
        docs: Sequence[Sequence[int]],
        *,
        dtype: np.dtype | str | None = None,
        first_doc: int = 0,
    ) -> SuffixIndex:
        """Index tokenized documents (non-negative ids below the token type's maximum)."""
        lengths = np.array([len(d) for d in docs], dtype=np.int64)
        if dtype is None:
            dtype = token_dtype(max((max(d) for d in docs if len(d)), default=0))
        dtype = np.dtype(dtype)
        doc_starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
        tokens = np.full(int(lengths.sum() + len(docs)), np.iinfo(dtype).max, dtype=dtype)
        for start, d in zip(doc_starts, docs):
            tokens[start : start + len(d)] = d
        return cls(tokens, suffix_array(tokens), doc_starts, first_doc=first_doc)

    def __len__(self) -> int:
        return len(self.tokens) - len(self.doc_starts)  # corpus tokens, separators excluded

    @property
    def n_docs(self) -> int:
        return len(self.doc_starts)

    def _key(self, query: Sequence[int]) -> bytes | None:
        """The query's bytes, or None when it holds a value no corpus token can have."""
        q = np.asarray(query, dtype=np.int64)
        if len(q) and (q.min() < 0 or q.max() >= self.separator):
            return None
        return q.astype(self.tokens.dtype).tobytes()

    def _range(self, key: bytes, lo: int = 0, hi: int | None = None) -> tuple[int, int]:
        """[lo, hi) of the suffix array: the suffixes that start with ``key`` (searched within
        [lo, hi)).
        """
        buf, sa, w, m = self._bytes, self._sa, self.width, len(key)
        hi = len(self.sa) if hi is None else hi
        end = hi
        while lo < hi:  # first suffix >= key
            mid = (lo + hi) // 2
            p = sa[mid] * w
            if bytes(buf[p : p + m]) < key:
                lo = mid + 1
            else:
                hi = mid
        start, hi = lo, end
        while lo < hi:  # first suffix whose first m bytes are > key
            mid = (lo + hi) // 2
            p = sa[mid] * w
            if bytes(buf[p : p + m]) <= key:
                lo = mid + 1
            else:
                hi = mid
        return start, lo

    def count(self, query: Sequence[int]) -> int:
        """Occurrences of the token sequence in the corpus (0 for an empty query)."""
        key = self._key(query)
        if not key:
            return 0
        lo, hi = self._range(key)
        return hi - lo

    def locate(self, query: Sequence[int], *, limit: int = 100) -> list[tuple[int, int]]:
        """(document id, offset in that document) of the first ``limit`` occurrences in corpus
        order.

        For spans occurring more than ``LOCATE_SCAN`` times, the first ``limit`` of that many
        suffix-array entries (still sorted, but not necessarily the corpus's first).
        """
        key = self._key(query)
        if not key or limit <= 0:
            return []
        lo, hi = self._range(key)
        positions = np.sort(self.sa[lo : min(hi, lo + max(limit, LOCATE_SCAN))])[:limit]
        docs = np.searchsorted(self.doc_starts, positions, side="right") - 1
        return [
            (int(d) + self.first_doc, int(p - self.doc_starts[d])) for d, p in zip(docs, positions)
        ]

    def longest(self, query: Sequence[int]) -> list[int]:
        """For each position of the query, the length of the longest span starting there that
        occurs.

        A match at position i minus its first token is a match at i + 1, so each search starts
        from the previous length minus one and narrows the previous range token by token:
        O(m log N) comparisons for the whole query.
        """
        q = np.asarray(query, dtype=np.int64)
        n, w = len(q), self.width
        valid = (q >= 0) & (q < self.separator)
        stop = np.full(n + 1, n)  # stop[i]: the first invalid position at or after i
        for i in range(n - 1, -1, -1):
            stop[i] = i if not valid[i] else stop[i + 1]
        key = np.where(valid, q, 0).astype(self.tokens.dtype).tobytes()
        out, k = [], 0
        for i in range(n):
            k = max(k - 1, 0)
            lo, hi = self._range(key[i * w : (i + k) * w]) if k else (0, len(self.sa))
            while i + k < stop[i]:
                nlo, nhi = self._range(key[i * w : (i + k + 1) * w], lo, hi)
                if nlo == nhi:
                    break
                lo, hi, k = nlo, nhi, k + 1
            out.append(k)
        return out

    def count_many(self, queries: Queries) -> np.ndarray:
        keys, lengths = _padded(queries, self.separator)
        out = np.zeros(len(lengths), dtype=np.int64)
        for rows in _chunks(lengths):
            k, m = keys[rows], lengths[rows]
            lo, hi = self._search(k, m, upper=False), self._search(k, m, upper=True)
            out[rows] = np.where(m > 0, hi - lo, 0)
        return out

    def prefix_match(self, queries: Queries) -> np.ndarray:
        return self.match_keys(*_padded(queries, self.separator))

    def match_keys(self, keys: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """``prefix_match`` of (K, W) int64 keys, the first ``lengths`` of each row meant.

        The longest prefix found is the longer common prefix of the key with its two
        neighbours in suffix order (the suffixes just below and at its lower bound).
        """
        keys = np.where((keys < 0) | (keys >= self.separator), -1, keys)  # never matched
        out = np.zeros(len(lengths), dtype=np.int64)
        if not len(self.sa):
            return out
        for rows in _chunks(lengths):
            k, m = keys[rows], lengths[rows]
            pos = self._search(k, m, upper=False)
            below = self._compare(np.maximum(pos - 1, 0), k, m)[1]
            at = self._compare(np.minimum(pos, len(self.sa) - 1), k, m)[1]
            out[rows] = np.maximum(np.where(pos > 0, below, 0), np.where(pos < len(self.sa), at, 0))
        return out

    def _search(self, keys: np.ndarray, lengths: np.ndarray, *, upper: bool) -> np.ndarray:
        """(K,) per key: the first suffix-array entry whose first ``lengths`` tokens are >= the
        key (> with ``upper``), all keys' binary searches advancing together.
        """
        lo = np.zeros(len(lengths), dtype=np.int64)
        hi = np.full(len(lengths), len(self.sa), dtype=np.int64)
        while True:
            active = np.flatnonzero(lo < hi)
            if not len(active):
                return lo
            mid = (lo[active] + hi[active]) // 2
            cmp = self._compare(mid, keys[active], lengths[active])[0]
            right = cmp <= 0 if upper else cmp < 0
            lo[active] = np.where(right, mid + 1, lo[active])
            hi[active] = np.where(right, hi[active], mid)

    def _compare(
        self, entries: np.ndarray, keys: np.ndarray, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The suffixes at suffix-array ``entries`` against the keys' first ``lengths`` tokens:
        (K,) -1 / 0 / 1 (suffix below / starting with / above the key) and (K,) their common
        prefix length.
        """
        width = keys.shape[1]
        # (K, W) corpus windows; every window meets a separator before the array ends (the
        # last token is one), so clipping the positions changes no comparison
        at = np.asarray(self.sa[entries], dtype=np.int64)[:, None] + np.arange(width)
        window = self.tokens[np.minimum(at, len(self.tokens) - 1)].astype(np.int64)
        differs = (window != keys) & (np.arange(width) < lengths[:, None])  # (K, W)
        first = differs.argmax(axis=1)
        found = differs.any(axis=1)
        rows = np.arange(len(keys))
        below = window[rows, first] < keys[rows, first]
        return np.where(found, np.where(below, -1, 1), 0), np.where(found, first, lengths)

    def save(self, out_dir: str | Path) -> Path:
        """Write the shard's arrays (each atomically; the caller marks the shard finished)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in SHARD_FILES:
            with atomic_output(out / f"{name}.npy") as fh:
                np.save(fh, getattr(self, name), allow_pickle=False)
        return out

    @classmethod
    def load(cls, path: str | Path, *, first_doc: int = 0) -> SuffixIndex:
        p = Path(path)
        missing = [n for n in SHARD_FILES if not (p / f"{n}.npy").is_file()]
        if missing:
            raise InputError(f"index shard lacks {missing[0]}.npy", path=str(p))
        a = {n: np.load(p / f"{n}.npy", mmap_mode="r", allow_pickle=False) for n in SHARD_FILES}
        return cls(a["tokens"], a["sa"], a["doc_starts"], first_doc=first_doc)


def _padded(queries: Queries, separator: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, W) int64 keys and (Q,) lengths; a value no corpus token can have becomes -1, which
    matches nothing (so no match runs through it, and the separator is never matched).
    """
    lengths = np.array([len(q) for q in queries], dtype=np.int64)
    keys = np.full((len(lengths), int(lengths.max(initial=0)) or 1), -1, dtype=np.int64)
    for i, q in enumerate(queries):
        keys[i, : lengths[i]] = np.asarray(q, dtype=np.int64)
    keys[(keys < 0) | (keys >= separator)] = -1
    return keys, lengths


def _chunks(lengths: np.ndarray) -> list[np.ndarray]:
    """Row indices in chunks of about ``BATCH_ELEMENTS`` key tokens."""
    per = max(1, BATCH_ELEMENTS // max(1, int(lengths.max(initial=1))))
    return [np.arange(i, min(i + per, len(lengths))) for i in range(0, len(lengths), per)]


def _int_view(a: np.ndarray):
    """Plain-int element access to an integer array (memory-mapped too), without numpy scalars."""
    if not len(a):
        return []
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    raw = memoryview(np.ascontiguousarray(a).view(np.uint8))  # type: ignore[arg-type]
    return raw.cast("i" if a.dtype.itemsize == 4 else "q")


def suffix_array(tokens: np.ndarray) -> np.ndarray:
    """Suffix array of a big-endian token array: sorted start positions of every suffix.

    >>> suffix_array(np.array([2, 1, 2, 1], dtype=">u2")).tolist()
    [3, 1, 2, 0]
    """
    import pydivsufsort

    if len(tokens) == 0:
        return np.zeros(0, dtype=np.int32)
    if tokens.dtype != tokens.dtype.newbyteorder(">"):
        raise ValueError("tokens must be big-endian so that byte order is token order")
    w = tokens.dtype.itemsize
    byte_sa = pydivsufsort.divsufsort(np.ascontiguousarray(tokens).view(np.uint8))
    if w == 1:  # a byte index: every suffix is a token's
        return byte_sa
    aligned = byte_sa[byte_sa % w == 0]
    aligned //= w
    return aligned


class CorpusIndex(_Queries):
    """A corpus indexed as consecutive shards; every query fans out and merges.

    Examples
    --------
    >>> docs = [[1, 2, 3], [2, 3], [3, 2, 3]]
    >>> whole = CorpusIndex([SuffixIndex.build(docs)])
    >>> split = CorpusIndex([SuffixIndex.build(docs[:2]), SuffixIndex.build(docs[2:], first_doc=2)])
    >>> split.count([2, 3]) == whole.count([2, 3]) == 3
    True
    >>> split.locate([2, 3]) == whole.locate([2, 3])
    True
    """

    def __init__(
        self, shards: Sequence[SuffixIndex], *, meta: dict | None = None, root: Path | None = None
    ):
        self.shards, self.meta, self.root = list(shards), dict(meta or {}), root
        self._doc_ids: list[str] | None = None
        self._tokenizer = None

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    @property
    def n_docs(self) -> int:
        return sum(s.n_docs for s in self.shards)

    @property
    def tokenizer_fingerprint(self) -> str | None:
        return self.meta.get("tokenizer", {}).get("fingerprint")

    def count(self, query: Sequence[int]) -> int:
        return sum(s.count(query) for s in self.shards)

    def locate(self, query: Sequence[int], *, limit: int = 100) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for s in self.shards:  # shards hold consecutive documents: concatenation is corpus order
            if len(out) >= limit:
                break
            out += s.locate(query, limit=limit - len(out))
        return out

    def longest(self, query: Sequence[int]) -> list[int]:
        per_shard = [s.longest(query) for s in self.shards]
        return [max(col) for col in zip(*per_shard)] if per_shard else [0] * len(query)

    def count_many(self, queries: Queries) -> np.ndarray:
        total = np.zeros(len(queries), dtype=np.int64)
        for s in self.shards:
            total += s.count_many(queries)
        return total

    def prefix_match(self, queries: Queries) -> np.ndarray:
        return self.match_keys(*_padded(queries, np.iinfo(np.int64).max))

    def match_keys(self, keys: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        best = np.zeros(len(lengths), dtype=np.int64)
        for s in self.shards:
            np.maximum(best, s.match_keys(keys, lengths), out=best)
        return best

    @property
    def is_bytes(self) -> bool:
        """A tokenizer-free index: UTF-8 bytes as tokens."""
        return self.tokenizer_fingerprint == BYTES_FINGERPRINT

    @property
    def unit(self) -> str:
        """What a token of this index is, for messages and reports."""
        return "bytes" if self.is_bytes else "tokens"

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Texts as this index's tokens: UTF-8 bytes, or the stored tokenizer's ids (as the
        build tokenized the corpus).
        """
        if self.is_bytes:
            return [list(utf8(t)) for t in texts]
        return self.tokenizer()(list(texts), verbose=False)["input_ids"]

    def decode(self, tokens: Sequence[int]) -> str:
        if self.is_bytes:  # a span may cut a character: its pieces are shown replaced
            return bytes(int(t) for t in tokens).decode("utf-8", errors="replace")
        return self.tokenizer().decode(list(tokens))

    @property
    def fingerprint(self) -> str | None:
        """Identity of the indexed content: token type, tokenizer and every shard's document
        hash.
        """
        if not self.meta.get("shards"):
            return None
        import hashlib

        parts = [self.meta.get("dtype", ""), str(self.tokenizer_fingerprint)] + [
            e.get("docs_sha256", "") for e in self.meta["shards"]
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def describe(self) -> dict:
        """What a run's results.json records about the index it used."""
        return {
            "path": str(self.root) if self.root else None,
            "fingerprint": self.fingerprint,
            "tokenizer": self.tokenizer_fingerprint,
            "corpus": self.meta.get("corpus"),
            "tokens": len(self),
            "documents": self.n_docs,
            "shards": len(self.shards),
        }

    def tokenizer(self):
        """The tokenizer the index was built with (a copy stored in the index directory)."""
        from memaudit.models.hf import load_tokenizer

        if self.is_bytes:
            raise InputError(
                "this is a byte index (built with --tokenizer bytes): it has no tokenizer; "
                "its tokens are UTF-8 bytes",
                path=str(self.root) if self.root else None,
            )
        if self._tokenizer is not None:
            return self._tokenizer
        if self.root is None:
            raise InputError(
                "this index was not loaded from a directory, so it has no stored tokenizer"
            )
        self._tokenizer = load_tokenizer(self.root / "tokenizer")
        return self._tokenizer

    def doc_id(self, doc: int) -> str:
        """The source id (file, line or record id) of a document number."""
        if self._doc_ids is None:
            self._doc_ids = []
            for entry in self.meta.get("shards", []):
                self._doc_ids += json.loads((self.root / entry["dir"] / "docs.json").read_text())
        return self._doc_ids[doc] if self._doc_ids else str(doc)

    def document(self, doc: int, start: int = 0, stop: int | None = None) -> list[int]:
        """The token ids of one document, or of its ``[start, stop)`` slice (read from the
        memory map only).
        """
        for s in self.shards:
            if s.first_doc <= doc < s.first_doc + s.n_docs:
                i = doc - s.first_doc
                begin = int(s.doc_starts[i])
                end = int(s.doc_starts[i + 1]) - 1 if i + 1 < s.n_docs else len(s.tokens) - 1
                lo = begin + max(0, start)
                hi = end if stop is None else min(end, begin + stop)
                return s.tokens[lo : max(lo, hi)].astype(np.int64).tolist()
        raise InputError(f"document {doc} is not in the index ({self.n_docs} documents)")

    @classmethod
    def load(cls, path: str | Path) -> CorpusIndex:
        """Open a finished index directory (shards memory-mapped)."""
        p = Path(path)
        if not (p / "index.json").is_file():
            raise InputError(
                "not a finished memaudit index (no index.json; build it with `memaudit index "
                "build`)",
                path=str(p),
            )
        meta = json.loads((p / "index.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"index format {meta.get('format_version')}, this memaudit reads {FORMAT_VERSION}",
                path=str(p),
            )
        shards = [SuffixIndex.load(p / e["dir"], first_doc=e["first_doc"]) for e in meta["shards"]]
        return cls(shards, meta=meta, root=p)


def utf8(text: str) -> bytes:
    """A text's bytes in a byte index (lone surrogates kept, as the corpus hash keeps them)."""
    return text.encode("utf-8", errors="surrogatepass")


def write_index_meta(root: Path, meta: dict) -> Path:
    """The file that marks an index finished: written last, atomically."""
    path = root / "index.json"
    write_text_atomic(path, json.dumps({"format_version": FORMAT_VERSION, **meta}, indent=2) + "\n")
    return path
