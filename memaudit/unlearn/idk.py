"""The alternatives ``idk_dpo`` prefers: each forget text's prompt followed by a placeholder
answer.

The prompt is the text's ``prefix`` field when it has one (canary ledgers do), cut at the
token boundary as ``unlearn-eval`` cuts it; otherwise the first half of its tokens. The
placeholder is one of ``--idk-answer``, chosen per text with the seed (TOFU draws one of its
"I don't know" answers per question the same way), encoded without special tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memaudit.errors import InputError
from memaudit.io.texts import TextRecord

from .curve import prompt_length


def prompt_tokens(tokenizer, record: TextRecord, ids: Sequence[int]) -> int:
    """How many of a forget text's tokens are its prompt (at least 1): unlearn-eval's rule, with
    no token budget beyond the half."""
    return prompt_length(tokenizer, record, list(ids), len(ids))


def alternative_sequences(
    tokenizer,
    records: Sequence[TextRecord],
    ids: Sequence[Sequence[int]],
    answers: Sequence[str],
    *,
    seed: int,
    eos: int,
) -> list[list[int]]:
    """``prompt ids + placeholder ids + [eos]`` for each forget text (``ids``: its encoding,
    without the EOS the loop's forget sequences end with)."""
    encoded = [tokenizer.encode(a, add_special_tokens=False) for a in answers]
    for answer, e in zip(answers, encoded):
        if not e:
            raise InputError(f"--idk-answer {answer!r} has no tokens")
    choice = np.random.default_rng(seed).integers(len(answers), size=len(records))
    return [
        list(t[: prompt_tokens(tokenizer, r, t)]) + encoded[c] + [eos]
        for r, t, c in zip(records, ids, choice)
    ]
