"""The index's query commands (``memaudit index count|locate|longest|overlap|info``): settings and
answers.

A query is text, tokenized with the tokenizer the index was built with (a byte index: its UTF-8
bytes), or token ids; ``--queries FILE`` answers a file of them in one process.
"""

from __future__ import annotations

import json

from memaudit.errors import InputError
from memaudit.io.atomic import write_text_atomic
from memaudit.io.texts import read_texts

from .config import (
    QueryConfig,
    TextsOverlapConfig,
)
from .suffix import CorpusIndex

INFO_KEYS = ("corpus", "tokens", "documents", "dtype", "tokenizer", "build")


def open_and_encode(index_dir: str, query: str, ids: bool) -> tuple[CorpusIndex, list[int]]:
    """The index and the query's token ids; an empty or malformed query is a one-line error."""
    index = CorpusIndex.load(index_dir)
    tokens = parse_ids(query) if ids else index.encode([query])[0]
    if not tokens:
        raise InputError("the query is empty")
    return index, tokens


def parse_ids(query: str, *, path: str | None = None, line: int | None = None) -> list[int]:
    """'12,7,99' (commas or spaces) as token ids."""
    try:
        return [int(t) for t in query.replace(",", " ").split()]
    except ValueError:
        raise InputError(
            f"--ids expects integers separated by commas or spaces, got '{query}'",
            path=path,
            line=line,
        ) from None


def batch_queries(config: QueryConfig, what: str) -> list[dict]:
    """Every query of ``config.queries`` answered in one process (``what``: ``count`` or
    ``longest``), one row each: id, query, and the answer; written to ``config.out`` when set.

    The file is read and every query encoded before anything is looked up or written.
    """
    if config.queries is None:
        raise InputError("batch_queries needs --queries")
    index = CorpusIndex.load(config.index_dir)
    records = read_texts(config.queries).records
    if config.ids:
        encoded = [parse_ids(r.text, path=r.path, line=r.line) for r in records]
    else:
        encoded = index.encode([r.text for r in records])
    if what == "count":
        answers: list = index.count_many(encoded).tolist()
    else:
        answers = index.longest_many(encoded)
    rows = [
        {"id": r.id, "query": r.text, "tokens": list(map(int, ids)), what: a}
        for r, ids, a in zip(records, encoded, answers)
    ]
    if config.out:
        write_rows(config.out, rows)
    return rows


def write_rows(path: str, rows: list[dict]) -> None:
    """Rows as JSONL, or as parquet when the path ends in .parquet (atomically)."""
    if path.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from memaudit.io.atomic import atomic_output

        with atomic_output(path) as fh:
            pq.write_table(pa.Table.from_pylist(rows), fh)
        return
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def locate_in_context(
    index: CorpusIndex, tokens: list[int], *, limit: int, context: int
) -> list[tuple[str, int, str]]:
    """(document id, offset, "'before' ['match'] 'after'") for the first ``limit`` occurrences."""
    decode = index.decode
    m = len(tokens)
    rows = []
    for doc, offset in index.locate(tokens, limit=limit):
        before = decode(index.document(doc, offset - context, offset))
        after = decode(index.document(doc, offset + m, offset + m + context))
        match = decode(index.document(doc, offset, offset + m))
        rows.append((index.doc_id(doc), offset, f"{before!r} [{match!r}] {after!r}"))
    return rows


def texts_overlap(config: TextsOverlapConfig) -> list[dict]:
    """Each text's verbatim overlap with the corpus (coverage, spans with their source documents).

    With ``config.out``, also written there as one JSON line per text.
    """
    index = CorpusIndex.load(config.index_dir)
    records = read_texts(config.texts).records
    encoded = index.encode([r.text for r in records])
    encoded = [list(map(int, ids)) for ids in encoded]
    found = [
        index.overlap_of(ids, lengths, min_tokens=config.min_tokens)
        for ids, lengths in zip(encoded, index.longest_many(encoded))
    ]
    for f in found:
        for s in f["spans"]:
            s["sources"] = [index.doc_id(d) for d in s["docs"]]
    if config.out:
        write_text_atomic(
            config.out,
            "".join(json.dumps({"id": r.id, **f}) + "\n" for r, f in zip(records, found)),
        )
    return found


def index_info(index_dir: str) -> dict:
    """What an index holds: tokens, documents, shards, tokenizer, how it was built."""
    meta = CorpusIndex.load(index_dir).meta
    return {**{k: meta[k] for k in INFO_KEYS}, "shards": len(meta["shards"])}
