"""Retention: how long do memories last when training goes on with other data?

Orhan (2023): recognition (is the seen text more likely than its matched unseen twin?) and
recall (prompted with the first half of its tokens, does greedy decoding give back the
second half?) of a ledger's canaries, re-measured while the lab's training loop continues on
new data. Recall falls steeply over the first updates, recognition holds much longer.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.corpus import load_corpus
from memaudit.lab.canaries import read_ledger
from memaudit.lab.lm import TrainSettings, fit, random_windows, token_stream
from memaudit.lab.verbatim import compare
from memaudit.models.generation import greedy_generate
from memaudit.models.hf import LoadOptions, load_causal_lm
from memaudit.scoring.engine import score_texts

from .config import RetentionConfig


def measure(lm, members, twins) -> dict:
    """Recognition and recall per repetition level (the model is left in eval mode)."""
    lm.model.eval()
    scores, _ = score_texts(
        lm, [c.text for c in members] + [c.text for c in twins], cache_root=None
    )
    mean_logp = np.array([float(np.mean(t.logp)) for t in scores])
    n = len(members)
    recognized = mean_logp[:n] > mean_logp[n:]
    ids = lm.encode([c.text for c in members])
    halves = [max(1, len(t) // 2) for t in ids]
    generated = greedy_generate(
        lm, [t[:h] for t, h in zip(ids, halves)], max(len(t) - h for t, h in zip(ids, halves))
    )
    matches = [compare(g[: len(t) - h], t[h:]) for g, t, h in zip(generated, ids, halves)]
    out = {}
    for level in sorted({c.level for c in members}):
        sel = [i for i, c in enumerate(members) if c.level == level]
        out[str(level)] = {
            "recognition": float(np.mean(recognized[sel])),
            "recall": float(np.mean([matches[i].token_match for i in sel])),
            "recall_exact": float(np.mean([matches[i].exact for i in sel])),
            "n": len(sel),
        }
    return out


def run_retention(config: RetentionConfig, *, progress=None) -> tuple[Path, dict]:
    t0 = time.perf_counter()
    canaries = read_ledger(config.ledger)
    by_id = {c.id: c for c in canaries}
    members = [c for c in canaries if c.member and c.pair_id in by_id]
    if not members:
        raise InputError("the ledger has no member canary with a twin", path=config.ledger)
    twins = [by_id[c.pair_id] for c in members]
    lm = load_causal_lm(config.model, LoadOptions(dtype="float32", device=config.device))
    docs = load_corpus(
        config.continue_corpus, max_chars=config.continue_chars, seed=config.seed
    ).docs
    settings = TrainSettings(
        steps=max(config.steps_list),
        batch_size=config.batch_size,
        seq_len=config.seq_len,
        lr=config.lr,
        warmup=0,
        seed=config.seed,
    )
    run = rs.RunDir.begin(config.out, "probe retention", config)
    out = run.path
    curve = {}
    if 0 in config.steps_list:
        curve[0] = measure(lm, members, twins)

    def on_step(step, loss):
        if progress:
            progress("continued training", step, settings.steps, f"loss {loss:.3f}")
        if step in config.steps_list:
            curve[step] = measure(lm, members, twins)
            lm.model.train()

    if settings.steps:
        fit(
            lm.model,
            random_windows(token_stream(lm.tokenizer, docs), settings),
            settings,
            on_step=on_step,
        )
    rows = [
        {"step": s, "level": lv, **m} for s, levels in curve.items() for lv, m in levels.items()
    ]
    run.write_scores({k: [r[k] for r in rows] for k in rows[0]})
    results = {
        **run.header({"target": lm}),
        "data": {"ledger": config.ledger, "members": len(members), "skipped": []},
        "curve": {str(s): v for s, v in curve.items()},
        "timings_s": {"total": time.perf_counter() - t0},
    }
    render = None
    if config.report:
        from memaudit.report import write_retention_report

        render = write_retention_report
    run.finish(results, render)
    return out, results
