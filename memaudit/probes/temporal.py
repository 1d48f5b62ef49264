"""Temporal contamination: does accuracy on dated facts collapse after the training cutoff?

A model that *knows* answers dated before its cutoff and *forecasts* the rest does
markedly better before it (Lopez-Lira et al., "The Memorization Problem"): the same
questions asked about later dates show what is recalled versus reasoned. Facts are JSONL
rows ``{"date": "YYYY-MM-DD", "prompt": ..., "answer": ...}`` (numeric answers are compared
by relative error, text answers by the start of the generation). ``make_facts`` writes
synthetic dated facts, so a lab model trained on those before a cutoff shows the effect end
to end.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.atomic import write_text_atomic
from memaudit.io.texts import jsonl_objects
from memaudit.metrics import wilson_interval
from memaudit.models.generation import greedy_generate
from memaudit.models.hf import LoadOptions, load_causal_lm

from .config import TemporalConfig

ITEMS = (
    "zorblat",
    "quenite",
    "marlow",
    "tessik",
    "brunel",
    "fandor",
    "glimmet",
    "hoxley",
    "ivrin",
    "jastro",
    "kelvane",
    "lumos",
)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Fact:
    date: dt.date
    prompt: str
    answer: str
    numeric: bool


def read_facts(path: str | Path) -> list[Fact]:
    out = []
    for n, row in jsonl_objects(path, what="facts file"):
        try:
            date = dt.date.fromisoformat(str(row["date"]))
            prompt, answer = row["prompt"], str(row["answer"])
        except KeyError as e:
            raise InputError(f"missing field {e}", path=str(path), line=n) from None
        except ValueError as e:
            raise InputError(f"bad date ({e}); use YYYY-MM-DD", path=str(path), line=n) from None
        if not isinstance(prompt, str) or not prompt.strip() or not answer.strip():
            raise InputError("empty prompt or answer", path=str(path), line=n)
        numeric = row.get("numeric", NUMBER.fullmatch(answer.strip()) is not None)
        out.append(Fact(date, prompt, answer.strip(), bool(numeric)))
    if not out:
        raise InputError("no facts in this file", path=str(path))
    return out


def make_facts(start: dt.date, end: dt.date, *, per_month: int = 2, seed: int = 0) -> list[dict]:
    """Synthetic dated facts: the price of an invented item on a date (a 3-digit number)."""
    rng = random.Random(seed)
    rows, month = [], dt.date(start.year, start.month, 1)
    while month <= end:
        for _ in range(per_month):
            day = month.replace(day=rng.randint(1, 28))
            item = rng.choice(ITEMS)
            price = rng.randint(100, 999)
            prompt = f"On {day.isoformat()} the price of {item} was"
            rows.append(
                {
                    "date": day.isoformat(),
                    "prompt": prompt,
                    "answer": str(price),
                    "text": f"{prompt} {price} credits.",
                }
            )
        month = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return rows


def write_facts(path, rows: list[dict]) -> Path:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return Path(path)


def score_answer(generated: str, fact: Fact, *, tolerance: float) -> tuple[bool, float | None]:
    """(correct, relative error): numbers by relative error within ``tolerance``, text by the first
    line's start.

    >>> f = Fact(dt.date(2020, 1, 1), "p", "200", True)
    >>> score_answer(" 202 credits.", f, tolerance=0.05), score_answer(" none", f, tolerance=0.05)
    ((True, 0.01), (False, None))
    """
    if fact.numeric:
        m = NUMBER.search(generated)
        if not m:
            return False, None
        truth = float(fact.answer)
        err = abs(float(m.group()) - truth) / max(abs(truth), 1e-12)
        return err <= tolerance, err
    first = generated.strip().splitlines()[0] if generated.strip() else ""
    return first.lower().startswith(fact.answer.lower()), None


def period_of(date: dt.date, period: str) -> str:
    """The period label of a date: ``year``, ``quarter`` or ``month``.

    >>> period_of(dt.date(2021, 5, 3), "quarter"), period_of(dt.date(2021, 5, 3), "month")
    ('2021-Q2', '2021-05')
    """
    if period == "year":
        return str(date.year)
    if period == "quarter":
        return f"{date.year}-Q{(date.month - 1) // 3 + 1}"
    if period == "month":
        return f"{date.year}-{date.month:02d}"
    raise InputError(f"unknown period '{period}'; use year, quarter or month")


def group_by_cutoff(facts: list[Fact], correct: list[bool], cutoff: dt.date, period: str) -> dict:
    """Accuracy before vs after the cutoff (Wilson CIs) and per period, each period marked
    before/after.
    """

    def rate(flags):
        k, n = int(sum(flags)), len(flags)
        return {"value": k / n if n else float("nan"), "ci": list(wilson_interval(k, n)), "n": n}

    before = [c for f, c in zip(facts, correct) if f.date < cutoff]
    after = [c for f, c in zip(facts, correct) if f.date >= cutoff]
    periods: dict[str, list] = {}
    for f, c in sorted(zip(facts, correct), key=lambda x: x[0].date):
        periods.setdefault(period_of(f.date, period), []).append((f.date < cutoff, c))
    by_period = {
        k: {
            **rate([c for _, c in v]),
            "side": "before"
            if all(b for b, _ in v)
            else "after"
            if not any(b for b, _ in v)
            else "straddles",
        }
        for k, v in periods.items()
    }
    return {"before": rate(before), "after": rate(after), "by_period": by_period}


def run_temporal(config: TemporalConfig, *, progress=None) -> tuple[Path, dict]:
    t0 = time.perf_counter()
    facts = read_facts(config.facts)
    cutoff = config.cutoff_date()
    first, last = min(f.date for f in facts), max(f.date for f in facts)
    if not first < cutoff <= last:
        raise InputError(
            f"cutoff {cutoff} is outside the facts' range ({first} to {last}): nothing to compare "
            "on one side"
        )
    period_of(first, config.period)  # an unknown period fails before any work
    model = load_causal_lm(config.model, LoadOptions(device=config.device))
    run = rs.RunDir.begin(config.out, "probe temporal", config)
    out = run.path
    prompts = model.encode([f.prompt for f in facts])
    generated = [
        model.tokenizer.decode(g)
        for g in greedy_generate(
            model,
            prompts,
            config.max_new_tokens,
            batch_size=config.batch_size,
            progress=progress,
            stage="answering",
        )
    ]
    scored = [score_answer(g, f, tolerance=config.tolerance) for g, f in zip(generated, facts)]
    correct = [c for c, _ in scored]
    summary = group_by_cutoff(facts, correct, cutoff, config.period)
    errors = {
        side: [
            e
            for (c, e), f in zip(scored, facts)
            if e is not None and (f.date < cutoff) == (side == "before")
        ]
        for side in ("before", "after")
    }
    summary["median_relative_error"] = {
        side: float(np.median(v)) if v else None for side, v in errors.items()
    }
    run.write_scores(
        {
            "date": [f.date.isoformat() for f in facts],
            "prompt": [f.prompt for f in facts],
            "answer": [f.answer for f in facts],
            "generated": generated,
            "correct": correct,
            "relative_error": [e for _, e in scored],
        }
    )
    results = {
        **run.header({"target": model}),
        "data": {"path": config.facts, "facts": len(facts), "skipped": []},
        "cutoff": cutoff.isoformat(),
        **summary,
        "timings_s": {"total": time.perf_counter() - t0},
    }
    render = None
    if config.report:
        from memaudit.report import write_temporal_report

        render = write_temporal_report
    run.finish(results, render)
    return out, results
