"""The index's query commands (``memaudit index count|locate|longest|overlap|info``): settings and
answers.

A query is text, tokenized with the tokenizer the index was built with, or token ids.
"""

from __future__ import annotations

import json

from memaudit.errors import InputError
from memaudit.io.atomic import write_text_atomic
from memaudit.io.texts import read_texts

from .config import (
    TextsOverlapConfig,
)
from .suffix import CorpusIndex

INFO_KEYS = ("corpus", "tokens", "documents", "dtype", "tokenizer", "build")


def open_and_encode(index_dir: str, query: str, ids: bool) -> tuple[CorpusIndex, list[int]]:
    """The index and the query's token ids; an empty or malformed query is a one-line error."""
    index = CorpusIndex.load(index_dir)
    if ids:
        try:
            tokens = [int(t) for t in query.replace(",", " ").split()]
        except ValueError:
            raise InputError(
                f"--ids expects integers separated by commas or spaces, got '{query}'"
            ) from None
    else:
        tokens = index.tokenizer()(query, verbose=False)["input_ids"]
    if not tokens:
        raise InputError("the query is empty")
    return index, tokens


def locate_in_context(
    index: CorpusIndex, tokens: list[int], *, limit: int, context: int
) -> list[tuple[str, int, str]]:
    """(document id, offset, "'before' ['match'] 'after'") for the first ``limit`` occurrences."""
    decode = index.tokenizer().decode
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
    encoded = index.tokenizer()([r.text for r in records], verbose=False)["input_ids"]
    found = [index.overlap(ids, min_tokens=config.min_tokens) for ids in encoded]
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
