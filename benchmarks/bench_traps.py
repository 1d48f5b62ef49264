"""Trap generation rate and detection throughput, and the cache reuse of a second detection.

    python benchmarks/bench_traps.py [--per-bucket 8]

Two 4-layer, 256-wide GPT-2s with one tokenizer: the reference trained for 100 steps on
standard-library snippets (an untrained model samples byte soup that fails the round
trip), the target freshly initialised (detection speed does not depend on training). Prints accepted
traps per minute (lengths 25 and 50, 3 buckets),
detection tokens/s on the first run (target and reference scored), and the time of a second
detection over the same ledger, which the score cache serves without a forward pass.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.io.corpus import stdlib_snippets  # noqa: E402
from memaudit.lab.canaries import write_ledger  # noqa: E402
from memaudit.lab.lm import (  # noqa: E402
    TrainSettings,
    build_model,
    save_model_dir,
    train_bpe_tokenizer,
    train_small_lm,
)
from memaudit.mia.config import TrapDetectConfig  # noqa: E402
from memaudit.mia.traps import inject_traps, make_traps, run_traps_detect  # noqa: E402
from memaudit.models import load_causal_lm  # noqa: E402


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--per-bucket", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = stdlib_snippets(1500, seed=99)
        tok = train_bpe_tokenizer(corpus, vocab_size=2048)
        model_dir = save_model_dir(build_model(tok, size="tiny", seed=0), tok, tmp / "m")
        # the reference must be trained: an untrained one samples byte soup that fails the round
        # trip
        ref_dir = train_small_lm(
            corpus,
            tmp / "r",
            tokenizer=tok,
            size="tiny",
            settings=TrainSettings(steps=100, seq_len=128),
        )
        model = load_causal_lm(ref_dir)

        t = time.perf_counter()
        traps = make_traps(model, lengths=(25, 50), per_bucket=args.per_bucket, seed=0)
        make_s = time.perf_counter() - t
        print(
            f"trap generation: {len(traps)} traps and controls in {make_s:.1f} s = "
            f"{60 * len(traps) / make_s:.0f} per minute"
        )

        docs = [(f"d{i}", d) for i, d in enumerate(stdlib_snippets(len(traps), chars=6000, seed=3))]
        _, placed = inject_traps(traps, docs, repetitions=(1, 10, 100))
        ledger = write_ledger(tmp / "ledger.jsonl", placed)
        tokens = 2 * sum(len(model.encode([p.text])[0]) for p in placed)  # target + reference
        for run in ("first", "second"):
            t = time.perf_counter()
            res = run_traps_detect(
                TrapDetectConfig(
                    model=str(model_dir),
                    reference=str(ref_dir),
                    ledger=str(ledger),
                    out=str(tmp / run),
                    cache_dir=str(tmp / "cache"),
                    n_bootstrap=200,
                    report=False,
                )
            )
            sec = time.perf_counter() - t
            passes = sum(s["forward_passes"] for s in res["scoring"].values())
            print(
                f"detection, {run} run: {sec:.2f} s, {passes} forward passes, {tokens / sec:.0f} "
                "trap tokens/s scored"
            )


if __name__ == "__main__":
    main()
