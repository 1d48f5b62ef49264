"""The zoo's training cost: tokens/s per arch at the sweep's default size, and the default
sweep's wall time.

    python benchmarks/bench_zoo.py [--quick] [--steps 20] [--no-sweep] [--workers 0]

- tokens/s: each arch of ``probe recall-sweep``'s defaults at its smallest default width, one
  torch thread (as a sweep worker trains), ``--steps`` steps of the sweep's batches (the first
  one untimed), on the sweep's training mix.
- sweep: ``probe recall-sweep`` with its defaults (``--quick``: its quick sizes) into a fresh
  temp dir, wall time end to end (workers: one per core unless ``--workers``).

Run it on an idle machine: under contention both numbers are lower bounds. Target (issue 19):
the default sweep under 30 minutes on 2 cores, ``--quick`` under 2 minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.probes.config import RecallSweepConfig  # noqa: E402
from memaudit.probes.recall import MQAR, mqar_batch, mqar_loss  # noqa: E402
from memaudit.probes.sweep import run_sweep, training_mix  # noqa: E402


def tokens_per_s(config: RecallSweepConfig, arch: str, steps: int) -> float:
    import torch

    from memaudit.probes.zoo import ZooConfig, ZooLM

    mix = training_mix(config)
    tasks = [MQAR(config.vocab, L, D, layout=config.layout, alpha=config.alpha) for L, D in mix]
    cfg = ZooConfig(
        arch=arch,
        vocab=config.vocab,
        d_model=min(config.d_models),
        n_layers=config.n_layers,
        max_len=max(config.lengths),
    ).check()
    torch.manual_seed(0)
    model = ZooLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    tokens, start = 0, 0.0
    for step in range(steps + 1):
        if step == 1:  # the first step (allocation, warm-up) is not timed
            start, tokens = time.perf_counter(), 0
        x, targets = mqar_batch(tasks, step, batch_size=config.batch_size, seed=0)
        mqar_loss(model(x), targets).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += x.numel()
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="The --quick sweep's sizes.")
    parser.add_argument("--steps", type=int, default=20, help="Timed steps per arch.")
    parser.add_argument("--no-sweep", action="store_true", help="Only tokens/s.")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()

    import torch

    config = RecallSweepConfig(quick=args.quick, workers=args.workers).resolved()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    print(
        f"training tokens/s, one thread, width {min(config.d_models)}, {config.n_layers} layers, "
        f"batch {config.batch_size}, mix {training_mix(config)}:"
    )
    for arch in config.archs:
        print(f"  {arch:18s} {tokens_per_s(config, arch, args.steps):10,.0f}")
    torch.set_num_threads(threads)
    if args.no_sweep:
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        _, res = run_sweep(
            RecallSweepConfig(quick=args.quick, workers=args.workers, out=f"{tmp}/run")
        )
        wall = time.perf_counter() - t0
    print(
        f"sweep{' --quick' if args.quick else ''}: {len(res['cells'])} cells, "
        f"{args.workers or os.cpu_count()} workers, {wall:.0f} s wall"
    )


if __name__ == "__main__":
    main()
