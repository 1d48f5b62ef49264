"""How often each text occurs in the training corpus, and the duplication buckets rates are grouped
by.

Duplication is the strongest known driver of memorization; with a corpus index, ``extract``
and ``mia`` report each text's occurrence count and their rates per bucket.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memaudit.errors import InputError

from .suffix import CorpusIndex

# (lowest count, highest count, label); a count of 0 is its own bucket: not in the corpus
BUCKETS = ((1, 1, "1"), (2, 4, "2-4"), (5, 16, "5-16"), (17, 64, "17-64"), (65, None, ">64"))
ABSENT = "0"


def duplication_bucket(count: int) -> str:
    """The bucket label of an occurrence count.

    >>> [duplication_bucket(c) for c in (0, 1, 3, 16, 17, 65)]
    ['0', '1', '2-4', '5-16', '17-64', '>64']
    """
    for low, high, label in BUCKETS:
        if count >= low and (high is None or count <= high):
            return label
    return ABSENT


def bucket_order(labels) -> list[str]:
    """Bucket labels present in ``labels``, in increasing duplication."""
    order = [ABSENT] + [b[2] for b in BUCKETS]
    return [b for b in order if b in set(labels)]


def open_index_for(index_path: str, model) -> CorpusIndex:
    """Open an index and check it was built with the model's tokenizer (else counts would be
    meaningless).
    """
    index = CorpusIndex.load(index_path)
    if index.is_bytes:
        raise InputError(
            "is a byte index (built with --tokenizer bytes); this command counts the model's "
            "token ids and needs an index built with `memaudit index build --tokenizer` "
            "pointing at the model (text queries, `index overlap` and `contamination` take a "
            "byte index)",
            path=index_path,
        )
    built_with = index.tokenizer_fingerprint
    if built_with != model.tokenizer_fingerprint:
        raise InputError(
            f"index was built with tokenizer {built_with}, the model {model.name} uses "
            f"{model.tokenizer_fingerprint}: "
            "rebuild it with `memaudit index build --tokenizer` pointing at this model",
            path=index_path,
        )
    return index


MIN_TRIMMED = 8  # texts at least this long are counted without their first and last token


def corpus_counts(index: CorpusIndex, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Occurrences of each text's tokens in the indexed corpus.

    A text cut out of a document tokenizes differently at its edges than inside it (BPE
    joins a word to the space or newline before it), so texts of ``MIN_TRIMMED`` tokens or
    more are counted without their first and last token.
    """
    return np.array(
        [index.count(ids[1:-1] if len(ids) >= MIN_TRIMMED else ids) for ids in token_ids],
        dtype=np.int64,
    )
