"""Synthetic facts for editing experiments: invented subjects, a few relations, answers drawn
from small sets, so a small lab model can learn them and an edit can change them.

``make_facts(n, seed)`` gives ``n`` facts (subject, relation, answer); ``fact_text`` writes one
as a training sentence, ``edit_request`` turns one into an edit to another answer with a
paraphrase and neighbourhood prompts (other subjects, same relation).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SYLLABLES = ("zor", "blax", "quin", "mar", "tes", "vel", "dor", "kin", "lum", "pra", "sho", "tav")
RELATIONS = {  # relation: (prompt, paraphrase, answers)
    "capital": (
        "The capital of {} is",
        "{}'s capital city is",
        (" Quimby", " Plenk", " Ostra", " Vell", " Darrow", " Mibb"),
    ),
    "colour": (
        "The flag of {} is",
        "{} flies a flag that is",
        (" red", " green", " blue", " gold", " black", " white"),
    ),
    "food": (
        "People in {} eat",
        "The food of {} is",
        (" rice", " bread", " fish", " beans", " figs", " corn"),
    ),
}


@dataclass(frozen=True)
class Fact:
    subject: str
    relation: str
    answer: str


def subjects(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        name = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()
        if name not in out:
            out.append(name)
    return out


def make_facts(n_subjects: int, *, seed: int = 0) -> list[Fact]:
    """Every relation of ``n_subjects`` invented subjects, answers drawn with ``seed``."""
    rng = random.Random(seed + 1)
    return [
        Fact(s, rel, rng.choice(answers))
        for s in subjects(n_subjects, seed)
        for rel, (_, _, answers) in RELATIONS.items()
    ]


def fact_text(f: Fact) -> str:
    return RELATIONS[f.relation][0].format(f.subject) + f.answer + "."


def edit_request(f: Fact, facts: list[Fact], *, seed: int = 0, neighbours: int = 3) -> dict:
    """An edit of ``f`` to another answer of its relation, as an ``--edits`` JSONL row."""
    rng = random.Random(f"{seed}:{f.subject}:{f.relation}")
    prompt, paraphrase, answers = RELATIONS[f.relation]
    new = rng.choice([a for a in answers if a != f.answer])
    others = [g for g in facts if g.relation == f.relation and g.subject != f.subject]
    return {
        "id": f"{f.subject}:{f.relation}",
        "subject": f.subject,
        "prompt": prompt,
        "target_new": new,
        "target_true": f.answer,
        "paraphrases": [paraphrase],
        "neighbourhood": [prompt.format(g.subject) for g in rng.sample(others, neighbours)],
    }
