"""Verbatim extraction (Carlini et al. 2022): prompt with a text's start, decode greedily, compare.

Per text: ``exact`` (every generated token equals the true continuation), ``token_match``
(share of equal positions: Pythia's memorization score), ``loose`` (normalised token
Levenshtein similarity >= 0.75), ``longest_prefix`` (leading tokens that match) and
``extraction_strength`` = 1 - k*/n, k* the shortest prefix from which greedy decoding
reproduces the rest of the text.

k* needs no generation at all: greedy decoding from a prefix reproduces the rest exactly
when the actual token is the argmax at every later position given the true text before it,
which the scoring engine already records (``is_argmax``). So extraction strength costs the
one cached forward pass the attacks use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rapidfuzz.distance import Levenshtein

from memaudit.metrics import wilson_interval
from memaudit.scoring.tokenscores import TokenScores

LOOSE_THRESHOLD = 0.75


@dataclass(frozen=True)
class Match:
    exact: bool
    token_match: float
    loose: bool
    longest_prefix: int


def compare(generated: list[int], truth: list[int]) -> Match:
    """How well one generation reproduces the true continuation (same length expected).

    Examples
    --------
    >>> compare([1, 2, 3, 9], [1, 2, 3, 4])
    Match(exact=False, token_match=0.75, loose=True, longest_prefix=3)
    """
    m = len(truth)
    equal = [g == t for g, t in zip(generated, truth)]
    longest = next((i for i, e in enumerate(equal) if not e), len(equal))
    similarity = 1 - Levenshtein.distance(generated, truth) / m
    return Match(
        all(equal) and len(generated) == m, sum(equal) / m, similarity >= LOOSE_THRESHOLD, longest
    )


def extraction_strength(scores: TokenScores) -> np.ndarray:
    """Extraction strength per text, ``1 - k / |y|`` (Wang et al. 2025), from the argmax flags.

    The text is ``x + y`` with ``x`` its first token (the one that has no context) and ``y``
    the rest; ``k`` is the fewest tokens of ``y`` that must be given after ``x`` for greedy
    decoding to reproduce the rest of ``y`` exactly. 1: the whole text follows from its first
    token; 0: not even the last token is greedy.
    """
    out = np.zeros(len(scores))
    for i, t in enumerate(scores):
        y_len = len(t.token_ids) - 1
        if y_len < 1:
            continue
        misses = np.flatnonzero(~t.is_argmax)  # is_argmax[j] is about y[j]
        k = 0 if len(misses) == 0 else int(misses[-1]) + 1  # give y up to its last miss
        out[i] = 1 - k / y_len
    return out


def rates(matches: list[Match], strengths=None) -> dict:
    """Extraction rates of a group of texts, with Wilson CIs for the proportions."""
    n = len(matches)
    exact = sum(m.exact for m in matches)
    loose = sum(m.loose for m in matches)
    out = {
        "n": n,
        "exact": {"value": exact / n if n else math.nan, "ci": wilson_interval(exact, n)},
        "loose": {"value": loose / n if n else math.nan, "ci": wilson_interval(loose, n)},
        "token_match": float(np.mean([m.token_match for m in matches])) if n else math.nan,
    }
    if strengths is not None:
        out["extraction_strength"] = float(np.mean(strengths)) if n else math.nan
    return out
