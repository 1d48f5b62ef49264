"""The suffix-array index against brute-force scans of random corpora."""

import numpy as np
import pytest

from memaudit.errors import InputError
from memaudit.index import SuffixIndex


def brute_count(docs, q):
    return sum(1 for d in docs for i in range(len(d) - len(q) + 1) if list(d[i : i + len(q)]) == list(q))


def brute_locate(docs, q):
    return sorted((k, i) for k, d in enumerate(docs) for i in range(len(d) - len(q) + 1) if list(d[i : i + len(q)]) == list(q))


def brute_longest(docs, q):
    out = []
    for i in range(len(q)):
        n = 0
        while i + n < len(q) and brute_count(docs, q[i : i + n + 1]):
            n += 1
        out.append(n)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_queries_equal_brute_force(seed, tmp_path):
    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(2, 6))  # a small vocabulary: many repeats
    docs = [rng.integers(0, vocab, int(rng.integers(0, 30))).tolist() for _ in range(int(rng.integers(1, 8)))]
    index = SuffixIndex.build(docs)
    if seed % 2:  # half the cases go through the on-disk format
        index = SuffixIndex.load(index.save(tmp_path / "idx"))
    assert len(index) == sum(map(len, docs))
    for _ in range(40):
        q = rng.integers(0, vocab + 1, int(rng.integers(1, 6))).tolist()  # vocab + 1: a token not in the corpus
        assert index.count(q) == brute_count(docs, q)
        assert index.locate(q, limit=10_000) == brute_locate(docs, q)
    for d in docs:  # every document's own start and end (the boundaries) are found
        if d:
            assert index.count(d) >= 1 and index.count(d[-2:]) == brute_count(docs, d[-2:])
    q = rng.integers(0, vocab, 12).tolist()
    assert index.longest(q) == brute_longest(docs, q)


def test_spans_never_cross_documents():
    index = SuffixIndex.build([[1, 2, 3], [4, 5]])
    assert index.count([3, 4]) == 0 and index.count([2, 3]) == 1 and index.locate([4, 5]) == [(1, 0)]


def test_overlap_of_copied_and_random_text():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 5000, 400).tolist() for _ in range(20)]
    index = SuffixIndex.build(docs)
    copied = docs[7][50:150]
    o = index.overlap(copied, min_tokens=8)
    assert o["coverage"] == 1.0 and o["longest"] == 100 and o["spans"][0]["docs"] == [7]
    random = rng.integers(0, 5000, 100).tolist()
    assert index.overlap(random, min_tokens=8)["coverage"] == 0.0
    mixed = random[:50] + copied[:50]
    assert index.overlap(mixed, min_tokens=8)["coverage"] == pytest.approx(0.5, abs=0.05)


def test_load_refuses_an_unfinished_index(tmp_path):
    (tmp_path / "idx").mkdir()
    with pytest.raises(InputError, match="not a finished memaudit index"):
        SuffixIndex.load(tmp_path / "idx")
