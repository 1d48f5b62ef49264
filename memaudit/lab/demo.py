"""``memaudit demo``: the embedded default, start to finish with no downloads.

Plants canaries (fake API keys, card and phone numbers, passphrases) at known repetition
counts into this Python's own standard-library source, trains a small GPT-2-style model on
it, and measures what the model kept of each canary against its never-inserted twin:
verbatim extraction, recognition, exposure and membership inference. One HTML report shows
how each grows with repetitions.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from memaudit.io import rundir as rs
from memaudit.io.progress import Progress
from memaudit.metrics import roc_curve
from memaudit.models.hf import load_causal_lm

from .canaries import make_canaries, read_ledger, write_ledger
from .config import DemoSettings
from .evaluate import LAB_ATTACKS, evaluate_canaries
from .train import TRAIN_RECORD, TrainConfig, run_train


@dataclass
class DemoOutcome:
    out_dir: Path
    report: Path
    results: dict


def run_demo(
    out: Path, settings: DemoSettings, *, overwrite: bool = False, progress: Progress | None = None
) -> DemoOutcome:
    t0 = time.perf_counter()
    s = settings
    run = rs.RunDir.begin(out, "demo", settings, overwrite=overwrite)
    out = run.path
    ledger_path = write_ledger(
        out / "canaries.jsonl",
        make_canaries(repetitions=s.repetitions, per_level=s.per_level, seed=s.seed),
    )
    train = TrainConfig(
        corpus="stdlib",
        out=str(out / "model"),
        ledger=str(ledger_path),
        model_size=s.model_size,
        steps=s.steps,
        batch_size=s.batch_size,
        seq_len=s.seq_len,
        lr=s.lr,
        vocab_size=s.vocab_size,
        corpus_chars=s.corpus_chars,
        seed=s.seed,
        checkpoint_every=max(1, s.steps // 5),
        overwrite=True,  # the demo owns its model dir: a model of other settings is retrained
    )
    model_dir = run_train(train, progress=progress)
    model = load_causal_lm(model_dir)
    canaries = read_ledger(model_dir / "ledger.jsonl")
    ev = evaluate_canaries(
        model,
        canaries,
        n_candidates=s.n_candidates,
        cache_root=out / "cache",
        seed=s.seed,
        progress=progress,
    )

    rows = ev.canaries
    labels = np.array([r.canary.member for r in rows], dtype=int)
    columns = {
        **{
            f: [getattr(r.canary, f) for r in rows]
            for f in (
                "id",
                "pair_id",
                "template",
                "level",
                "member",
                "repetitions",
                "text",
                "secret",
            )
        },
        **{
            f: [getattr(r, f) for r in rows]
            for f in (
                "generated",
                "exact",
                "secret_found",
                "token_match",
                "exposure",
                "exposure_rank",
            )
        },
        **{name: v.tolist() for name, v in ev.attack_scores.items()},
    }
    run.write_scores(columns)
    results = {
        **run.header({"target": model}),
        "training": json.loads((model_dir / TRAIN_RECORD).read_text()),
        "attacks": LAB_ATTACKS.split(","),
        "summary": ev.summary,
        "metrics": ev.summary["mia"],
        "roc": {
            name: dict(zip(("fpr", "tpr"), (a.tolist() for a in roc_curve(v, labels)[:2])))
            for name, v in ev.attack_scores.items()
        },
        "timings_s": {"total": time.perf_counter() - t0},
    }
    from memaudit.report import write_demo_report

    run.finish(results, partial(write_demo_report, columns=columns))
    return DemoOutcome(out, out / "report.html", results)
