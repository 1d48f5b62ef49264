"""Throughput of the lab's generator and trainer, each against a baseline measured in the same run.

    python benchmarks/bench_lab.py [--prompts 128] [--repeats 3] [--demo]

- extraction: greedy continuations (K = 32 prompt tokens, M = 32 new tokens) of standard-library
  snippets by memaudit's batched, KV-cached generator, against one prompt at a time (with
  the same KV cache: batch size 1) and one prompt at a time without a cache (a plain loop
  that re-reads the whole sequence for every token). Target (issue 3): >= 4x.
- trainer: tokens/s of `fit` on the lab's insertion schedule (canaries written into the
  batches) against a bare loop on one fixed batch of the same shape (no data pipeline, no
  insertion bookkeeping). Target: >= 0.9x.
- --demo: wall time of `memaudit demo` (the full default run).

Models are 4-layer, 256-wide GPT-2s (the demo's size) with a 2k BPE vocabulary.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.io.corpus import stdlib_snippets  # noqa: E402
from memaudit.lab.canaries import make_canaries  # noqa: E402
from memaudit.lab.insertion import Schedule, canary_tokens, plan_insertions  # noqa: E402
from memaudit.lab.lm import (  # noqa: E402
    EOS,
    TrainSettings,
    build_model,
    fit,
    save_model_dir,
    token_stream,
    train_bpe_tokenizer,
)
from memaudit.models import load_causal_lm  # noqa: E402
from memaudit.models.generation import greedy_generate  # noqa: E402


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def no_cache_loop(model, prompts, m):
    out = []
    for p in prompts:
        ids = list(p)
        for _ in range(m):
            with torch.no_grad():
                ids.append(
                    int(
                        model.model(input_ids=torch.tensor([ids], device=model.device))
                        .logits[0, -1]
                        .argmax()
                    )
                )
        out.append(ids[len(p) :])
    return out


def bench_extraction(model, texts, repeats):
    k, m = 32, 32
    prompts = [t[:k] for t in model.encode(texts) if len(t) >= k]
    batched = median_time(lambda: greedy_generate(model, prompts, m), repeats)
    one_by_one = median_time(lambda: greedy_generate(model, prompts, m, batch_size=1), 1)
    plain = median_time(lambda: no_cache_loop(model, prompts, m), 1)
    assert greedy_generate(model, prompts[:8], m) == no_cache_loop(
        model, prompts[:8], m
    )  # same answers
    tokens = len(prompts) * m
    print(f"\nextraction: {len(prompts)} prompts x {m} new tokens")
    print(f"{'method':<34}{'seconds':>9}{'tokens/s':>10}{'memaudit speed-up':>19}")
    for name, sec in (
        ("memaudit (batched, KV cache)", batched),
        ("one prompt at a time, KV cache", one_by_one),
        ("one prompt at a time, no cache", plain),
    ):
        print(f"{name:<34}{sec:>9.2f}{tokens / sec:>10.0f}{sec / batched:>18.1f}x")


def bench_trainer(tokenizer, repeats, steps=20):
    settings = TrainSettings(steps=steps, batch_size=16, seq_len=128, seed=0)
    stream = token_stream(tokenizer, stdlib_snippets(800, chars=600, seed=2))
    canaries = make_canaries(repetitions=(1, 4, 16, 64), per_level=8)
    tokens = canary_tokens(
        tokenizer, [c for c in canaries if c.member], tokenizer.convert_tokens_to_ids(EOS)
    )
    plan = plan_insertions(canaries, tokens, steps=steps, batch_size=16, seq_len=128, seed=0)
    schedule = Schedule(
        stream, steps=steps, batch_size=16, seq_len=128, insertions=plan, tokens=tokens
    )
    fixed = schedule.batch(0)

    def ours():
        fit(build_model(tokenizer, size="tiny", seed=0), schedule.batch, settings)

    def bare():
        model = build_model(tokenizer, size="tiny", seed=0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        for _ in range(steps):
            model(input_ids=fixed, labels=fixed).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    t_ours, t_bare = median_time(ours, repeats), median_time(bare, repeats)
    n = steps * 16 * 128
    print(f"\ntrainer: {steps} steps x 16 x 128 tokens, {len(plan)} canary insertions")
    print(f"{'method':<34}{'seconds':>9}{'tokens/s':>10}")
    print(f"{'memaudit fit + insertion schedule':<34}{t_ours:>9.2f}{n / t_ours:>10.0f}")
    print(f"{'bare loop, one fixed batch':<34}{t_bare:>9.2f}{n / t_bare:>10.0f}")
    print(f"trainer vs bare: {t_bare / t_ours:.2f}x the throughput (target >= 0.9x)")


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--demo", action="store_true", help="also time the full `memaudit demo`")
    args = ap.parse_args()
    tokenizer = train_bpe_tokenizer(stdlib_snippets(1500, seed=99), vocab_size=2048)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_causal_lm(
            save_model_dir(build_model(tokenizer, size="tiny", seed=0), tokenizer, Path(tmp) / "m")
        )
    device = (
        torch.cuda.get_device_name()
        if model.device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    print(f"device: {device}; medians of {args.repeats} runs (baselines without a cache: 1 run)")
    bench_extraction(model, stdlib_snippets(args.prompts, chars=400, seed=4), args.repeats)
    bench_trainer(tokenizer, args.repeats)
    if args.demo:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "memaudit", "demo", "--out", tmp],
                check=True,
                capture_output=True,
            )
            print(f"\nmemaudit demo: {time.perf_counter() - t:.0f} s wall time")


if __name__ == "__main__":
    main()
