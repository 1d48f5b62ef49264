"""Diffusion: nearest-neighbour throughput, and the wall time of an EMM sweep.

    python benchmarks/bench_diffusion.py [--queries 1000] [--train 10000] [--repeats 3] [--emm]

1. Exact two nearest training images of every generated image. Images 3x32x32 (CIFAR-sized,
   D = 3072), ``--train`` training and ``--queries`` query images of random uint8 pixels.
   Baseline: the naive per-sample loop (numpy: the distance of one sample to every training
   image, then the two smallest). Ours: ``two_nearest`` (float32 GEMM per chunk, exact float64
   re-check of 8 candidates). Both answers are checked equal. Also the raw float32 matmul rate
   of this machine (torch, the same shapes) and the share of it our routine reaches.
   Medians of ``--repeats`` runs; ratios naive / ours.
2. ``--emm``: the default ``memaudit diffusion emm`` (digits; sizes 10..200; none, class and
   random labels; 2000 steps each), its wall time and each job's training time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.diffusion.neighbours import two_nearest  # noqa: E402


def naive_two_nearest(queries: np.ndarray, train: np.ndarray):
    t = train.reshape(len(train), -1).astype(np.float32)
    i1, i2, d1, d2 = [], [], [], []
    for q in queries.reshape(len(queries), -1).astype(np.float32):
        d = np.sqrt(((t - q) ** 2).sum(1))
        two = np.argpartition(d, 1)[:2]
        two = two[np.argsort(d[two])]
        i1.append(two[0]), i2.append(two[1]), d1.append(d[two[0]]), d2.append(d[two[1]])
    return np.array(i1), np.array(i2), np.array(d1), np.array(d2)


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_neighbours(args) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (args.train, 3, 32, 32), dtype=np.uint8)
    queries = rng.integers(0, 256, (args.queries, 3, 32, 32), dtype=np.uint8)
    dims = 3 * 32 * 32
    t_naive, naive = timed(lambda: naive_two_nearest(queries, train), max(1, args.repeats // 3))
    t_ours, ours = timed(lambda: two_nearest(queries, train), args.repeats)
    assert (ours.index1 == naive[0]).all() and (ours.index2 == naive[1]).all(), "answers differ"
    np.testing.assert_allclose(ours.d1 * np.sqrt(dims), naive[2], rtol=1e-4)
    a = torch.rand(args.queries, dims)
    b = torch.rand(dims, args.train)
    t_mm, _ = timed(lambda: a @ b, args.repeats)
    flops = 2 * args.queries * args.train * dims
    print(
        f"nearest neighbours: {args.queries} queries x {args.train} training images of 3x32x32, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"  naive per-sample loop  {t_naive:8.3f} s")
    print(
        f"  ours (GEMM)            {t_ours:8.3f} s   naive/ours = {t_naive / t_ours:.1f}x (target "
        ">= 20x)"
    )
    print(
        f"  raw matmul, same shape {t_mm:8.3f} s   {flops / t_mm / 1e9:.1f} GFLOP/s; ours reaches "
        f"{t_mm / t_ours:.0%} of it "
        f"({flops / t_ours / 1e9:.1f} GFLOP/s)"
    )


def bench_emm() -> None:
    from memaudit.diffusion.emm import EMMConfig
    from memaudit.diffusion.run import run_emm

    with tempfile.TemporaryDirectory() as tmp:
        cfg = EMMConfig(sizes=(10, 20, 30, 50, 100, 200), out=str(Path(tmp) / "emm"), report=False)
        t0 = time.perf_counter()
        _, results = run_emm(cfg)
        wall = time.perf_counter() - t0
    train = [j["seconds"]["train"] for j in results["jobs"]]
    print(
        f"EMM sweep: {len(results['jobs'])} models in {wall / 60:.1f} min wall "
        f"({cfg.workers or os.cpu_count()} workers); "
        f"training per model median {statistics.median(train):.0f} s"
    )
    for c, curve in results["curves"].items():
        print(f"  {c:14s} R = {', '.join(f'{r:.2f}' for r in curve['ratio'])}  EMM {curve['emm']}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--emm", action="store_true")
    args = p.parse_args()
    bench_neighbours(args)
    if args.emm:
        bench_emm()


if __name__ == "__main__":
    main()
