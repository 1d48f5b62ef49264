"""Generated benchmark items for contamination experiments: questions about invented places
whose answers no model can know unless the item was in its training data.

Each item is a question and a short answer (``Q: What is the capital of Zorvel? A: Quintes.``):
the capital is an invented name and the founding year a random one, so a model that was never
shown an item answers it at chance (about 1/1000 for a year), whatever it learned about the
format. Items are written as ``Canary`` records (template ``qa``: the question is the prefix,
the answer the secret), so the trainer's ledger and insertion plan place them as it places
canaries, and as a benchmark JSONL (``id``, ``question``, ``answer``, ``text``, ``copies``),
the input of ``memaudit contamination``.

The editing and temporal probes have their own fact generators; they sit above the lab, which
cannot import them (tests/test_layers.py), so this one is the lab's.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from memaudit.errors import InputError
from memaudit.io.atomic import write_text_atomic

from .canaries import QA, Canary

SYLLABLES = ("zor", "vel", "quin", "tes", "mar", "dov", "lum", "pra", "sho", "tav", "kir", "bel")
QUESTIONS = {  # relation: (question, answer drawn with the item's generator)
    "capital": (
        "Q: What is the capital of {}? A:",
        lambda rng: _name(rng, 2, 3),
    ),
    "founded": (
        "Q: In which year was {} founded? A:",
        lambda rng: str(rng.randint(1000, 1999)),
    ),
}


def _name(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(lo, hi))).capitalize()


def make_items(*, copies: tuple[int, ...], per_level: int, seed: int = 0) -> list[Canary]:
    """``per_level`` items for each copy count (0: a clean item, never inserted).

    Every item asks about its own invented place, so no two items share a question and an
    inserted item says nothing about a clean one. Relations alternate within each level.

    Examples
    --------
    >>> items = make_items(copies=(0, 4), per_level=2)
    >>> [(i.repetitions, i.member) for i in items]
    [(0, False), (0, False), (4, True), (4, True)]
    >>> items[0].text.startswith(items[0].prefix + " " + items[0].secret)
    True
    """
    if per_level < 1 or not copies or any(int(c) < 0 for c in copies):
        raise InputError("benchmark items: per_level must be >= 1 and every copy count >= 0")
    rng = random.Random(f"qa:{seed}")
    n = per_level * len(copies)
    places: list[str] = []
    while len(places) < n:
        name = _name(rng, 2, 3)
        if name not in places:
            places.append(name)
    relations = list(QUESTIONS)
    out = []
    for level_idx, c in enumerate(copies):
        for j in range(per_level):
            k = level_idx * per_level + j
            relation = relations[k % len(relations)]
            question, draw = QUESTIONS[relation]
            prefix, answer = question.format(places[k]), draw(rng)
            out.append(
                Canary(
                    id=f"q{k:04d}",
                    pair_id="",
                    template=QA,
                    name=places[k],
                    secret=answer,
                    text=f"{prefix} {answer}.",
                    prefix=prefix,
                    repetitions=int(c),
                    level=int(c),
                    policy="uniform",
                    member=int(c) > 0,
                    meta={"relation": relation, "question": prefix, "answer": answer},
                )
            )
    return out


def write_benchmark(path: str | Path, items: list[Canary]) -> Path:
    """The items as benchmark JSONL: ``id``, ``question``, ``answer``, ``text``, ``copies``."""
    rows = [
        {
            "id": i.id,
            "question": i.prefix,
            "answer": i.secret,
            "text": i.text,
            "copies": i.repetitions,
        }
        for i in items
    ]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return Path(path)
