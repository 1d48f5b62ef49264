"""Shadow training per model against `memaudit train` on the same half, in one run.

    python benchmarks/bench_shadows.py [--pool 1000] [--models 4] [--steps 100]

``memaudit shadows train`` trains each shadow with the lab trainer on its half of the pool;
the overhead it may add is choosing the halves and writing them. This times the whole
``shadows train`` (wall time over the number of models) and then ``memaudit train``'s own
function (``run_train``) on each shadow's half with the same settings, into another dir.
Prints each pair's ratio and the median. Target (issue 15): 1.0x (no overhead). Micro
models on standard-library snippets, on this machine's CPU or GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.io.corpus import stdlib_snippets  # noqa: E402
from memaudit.lab.train import run_train  # noqa: E402
from memaudit.mia.config import ShadowsTrainConfig  # noqa: E402
from memaudit.mia.shadows import HALVES, _train_config, model_name, run_shadows_train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(tmp) / "pool.jsonl"
        texts = stdlib_snippets(args.pool, seed=5)
        pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        config = ShadowsTrainConfig(
            pool=str(pool),
            out=str(Path(tmp) / "shadows"),
            n_models=args.models,
            model_size="micro",
            steps=args.steps,
            checkpoint_every=0,
        )
        start = time.perf_counter()
        out = run_shadows_train(config)
        per_shadow = (time.perf_counter() - start) / args.models
        record = json.loads((out / "shadows.json").read_text())
        ratios = []
        for i, shadow in enumerate(record["shadows"]):
            half = out / HALVES / f"{model_name(i)}.jsonl"
            plain = replace(
                _train_config(config, i, half, record["tokenizer"]),
                out=str(Path(tmp) / f"plain-{i}"),
            )
            t0 = time.perf_counter()
            run_train(plain)
            seconds = time.perf_counter() - t0
            ratios.append(shadow["seconds_this_session"] / seconds)
            print(
                f"{model_name(i)}: shadow {shadow['seconds_this_session']:.2f} s, "
                f"train {seconds:.2f} s, ratio {ratios[-1]:.2f}"
            )
    print(
        f"median shadow/train ratio {statistics.median(ratios):.2f} over {args.models} models "
        f"({args.steps} steps, micro); whole `shadows train` per model {per_shadow:.2f} s "
        "(includes the pool tokenizer, trained once)"
    )


if __name__ == "__main__":
    main()
