"""Scoring on a local Ray of 2 workers against the local engine on the same 2 cores.

    python benchmarks/bench_ray.py [--texts 2000] [--size tiny] [--repeats 3] [--cpus 2]

The same texts, the same random-init model, the same shards: the local engine in this
process with ``--cpus`` torch threads, then ``--engine ray`` on a local Ray of ``--cpus``
CPUs with ``--cpus`` workers of one thread each. Each repeat writes a fresh cache dir (the
shards are part of the work). Prints the median time of each and the overhead ratio
(target, issue 16: <= 1.3x), and, apart, Ray's one-time start (cluster, workers, model loads).
The scores are checked bitwise equal. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.io.corpus import stdlib_snippets  # noqa: E402
from memaudit.lab.lm import build_model, save_model_dir, train_bpe_tokenizer  # noqa: E402
from memaudit.models.hf import LoadOptions, load_causal_lm  # noqa: E402
from memaudit.scoring import distributed  # noqa: E402
from memaudit.scoring.engine import ScoreSettings, score_texts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--size", default="tiny", help="micro, tiny, small or base")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--shard-texts", type=int, default=64)
    args = parser.parse_args()

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        texts = stdlib_snippets(args.texts + 300, seed=3)
        tokenizer = train_bpe_tokenizer(texts[:300], vocab_size=2048)
        model_dir = save_model_dir(
            build_model(tokenizer, size=args.size, context=256), tokenizer, root / "model"
        )
        texts = texts[300:]
        torch.set_num_threads(args.cpus)
        model = load_causal_lm(model_dir, LoadOptions(device="cpu"))
        settings = ScoreSettings(shard_texts=args.shard_texts)
        n_tokens = sum(len(t) for t in model.encode(texts))

        def run(name: str, k: int):
            t0 = time.perf_counter()
            scores, _ = score_texts(model, texts, settings, cache_root=root / f"cache-{name}-{k}")
            return time.perf_counter() - t0, scores

        score_texts(model, texts[: 2 * args.cpus], ScoreSettings(shard_texts=1))  # warm-up
        local = [run("local", k) for k in range(args.repeats)]

        t0 = time.perf_counter()
        ray.init(
            num_cpus=args.cpus,
            _temp_dir=str(root / "ray"),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        engine = distributed.open_engine(
            "ray", address=None, workers=args.cpus, device="cpu", trust_remote_code=False
        )
        with engine:
            # the workers load the model on their first shard: a warm-up run, timed apart
            score_texts(model, texts[: 2 * args.cpus], ScoreSettings(shard_texts=1))
            start = time.perf_counter() - t0
            on_ray = [run("ray", k) for k in range(args.repeats)]
        distributed.release_workers()
        ray.shutdown()

    for a, b in zip(local, on_ray):
        for name in ("logp", "mu", "sigma", "is_argmax"):
            np.testing.assert_array_equal(getattr(a[1], name), getattr(b[1], name))
    t_local = statistics.median(t for t, _ in local)
    t_ray = statistics.median(t for t, _ in on_ray)
    print(f"{args.texts} texts, {n_tokens} tokens, model {args.size}, shards of {args.shard_texts}")
    print(
        f"local engine, {args.cpus} threads:      median {t_local:.2f} s "
        f"({n_tokens / t_local:,.0f} tokens/s)"
    )
    print(
        f"ray, {args.cpus} workers x 1 thread:     median {t_ray:.2f} s "
        f"({n_tokens / t_ray:,.0f} tokens/s)"
    )
    print(
        f"overhead ratio ray/local: {t_ray / t_local:.2f}x (target <= 1.3x); "
        f"scores bitwise equal; Ray's one-time start {start:.1f} s (not in the ratio)"
    )


if __name__ == "__main__":
    main()
