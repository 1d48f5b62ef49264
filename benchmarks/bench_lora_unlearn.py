"""LoRA unlearning against full unlearning: step time and peak memory on the same model.

    python benchmarks/bench_lora_unlearn.py [--size small] [--rank 8] [--steps 10] [--repeats 3]

A GPT-2 of the lab's ``--size`` (random init: memory and time do not depend on the weights),
16 canaries as the forget set and the standard library as retain data; the default method
(npo, with its retain NLL) through the shared loop, at unlearn's default batch shapes (16
forget sequences, 16 retain windows of 128 tokens). Variants: full (every weight trained, the
baseline) and LoRA of ``--rank`` on unlearn's default targets.

Peak memory: each run is a fresh subprocess (torch's CPU allocator keeps no statistics, and
tracemalloc does not see tensor memory). It reads its resident set size from /proc/self/statm
after its imports (peft included, in both variants) and its data, before the model is loaded
(the baseline), runs the steps, and reads its peak resident set size (``getrusage``
``ru_maxrss``). Reported: peak minus baseline (the model, its training state and a step's
activations: what LoRA changes) and the whole process's peak. LoRA saves the gradients and the
two AdamW moments of every base weight (3x the weights' size) and little of the activations,
so the ratio falls with the model's size and rises with the batch (``--batch-size``,
``--seq-len``). Step time: median of the steps after the first (which carries one-time work).
Each variant runs ``--repeats`` times, alternating; medians over the repeats, ratios to full
unlearning in the same run. Target: peak memory (over baseline) <= 0.6x at rank 8 on the
``small`` model. With ``--device cuda`` the peak is torch's ``max_memory_allocated`` and the
baseline the memory allocated before the model is loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args) -> None:
    """One variant's steps; prints one JSON line."""
    import torch

    from memaudit.io.corpus import load_corpus
    from memaudit.io.texts import read_texts
    from memaudit.lab.lm import EOS, TrainSettings, random_windows, token_stream
    from memaudit.models.hf import LoadOptions, load_causal_lm
    from memaudit.unlearn.loop import LoopSettings, unlearn_loop
    from memaudit.unlearn.lora import attach_lora, lora_targets
    from memaudit.unlearn.methods import METHODS

    torch.set_num_threads(args.threads)
    # everything but the model before the baseline, in both variants alike (peft, the model's
    # transformers module, the data), so that the difference is the model and its training
    import peft  # noqa: F401
    import transformers.models.gpt2.modeling_gpt2  # noqa: F401

    docs = load_corpus("stdlib", max_chars=100_000).docs
    texts = [r.text for r in read_texts(args.forget).records]
    cuda = args.device.startswith("cuda")
    baseline = torch.cuda.memory_allocated() / 2**20 if cuda else rss_mb()
    lm = load_causal_lm(args.model, LoadOptions(dtype="float32", device=args.device))
    model = lm.model
    if args.variant == "lora":
        model = attach_lora(
            model,
            rank=args.rank,
            alpha=2.0 * args.rank,
            targets=lora_targets(model),
            base_path=args.model,
        )
    eos = lm.tokenizer.convert_tokens_to_ids(EOS)
    forget = [ids + [eos] for ids in lm.encode(texts)]
    windows = random_windows(
        token_stream(lm.tokenizer, docs),
        TrainSettings(batch_size=args.batch_size, seq_len=args.seq_len, seed=1),
    )
    settings = LoopSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        retain_batch_size=args.batch_size,
        seq_len=args.seq_len,
    )
    stamps = [time.perf_counter()]
    unlearn_loop(
        model,
        forget,
        windows,
        METHODS.get(args.method),
        settings,
        pad_id=eos,
        on_step=lambda s, e: stamps.append(time.perf_counter()),
    )
    if cuda:  # the allocator's own high-water mark
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    steps = [b - a for a, b in zip(stamps[1:], stamps[2:])]  # the first step carries one-time work
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        json.dumps(
            {
                "step_s": statistics.median(steps) if steps else stamps[1] - stamps[0],
                "peak_mb": peak,
                "baseline_mb": baseline,
                "trainable": trainable,
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        )
    )


def run_variant(variant: str, args, model_dir: Path, forget: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--model", str(model_dir)]
    cmd += ["--forget", str(forget), "--rank", str(args.rank), "--steps", str(args.steps)]
    cmd += ["--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
    cmd += ["--method", args.method, "--threads", str(args.threads), "--device", args.device]
    # glibc raises its mmap threshold as big blocks are freed, after which freed tensors stay
    # resident in the heap and the peak reflects fragmentation: a fixed threshold maps every
    # large tensor on its own and unmaps it when freed, so the resident set follows live memory
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{variant} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="small")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--method", default="npo")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (peak: max_memory_allocated)")
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1)))
    ap.add_argument("--child", choices=("full", "lora"), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--forget", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.variant = args.child
        child(args)
        return

    from memaudit.io.corpus import stdlib_snippets
    from memaudit.lab.canaries import make_canaries, write_texts_with_prefix
    from memaudit.lab.lm import build_model, save_model_dir, train_bpe_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok = train_bpe_tokenizer(stdlib_snippets(1500, seed=7), vocab_size=4096)
        model_dir = save_model_dir(
            build_model(tok, size=args.size, context=max(256, args.seq_len), seed=0),
            tok,
            root / "model",
        )
        canaries = make_canaries(repetitions=(8,), per_level=16)
        forget = write_texts_with_prefix(root / "forget.jsonl", canaries[:16])
        runs: dict[str, list[dict]] = {"full": [], "lora": []}
        for _ in range(args.repeats):
            for variant in runs:  # alternating, so drifts of the machine hit both alike
                runs[variant].append(run_variant(variant, args, model_dir, forget))
    med = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}
    print(
        f"== {args.method}, {args.size} GPT-2 ({med['full']['parameters'] / 1e6:.1f}M parameters), "
        f"forget {args.batch_size} x canaries + retain {args.batch_size} x {args.seq_len} tokens, "
        f"{args.steps} steps, {args.repeats} repeats, {args.threads} threads =="
    )
    print(
        f"{'variant':<14} {'trainable':>10} {'step ms':>9} {'x full':>7} "
        f"{'peak-base MB':>13} {'x full':>7} {'peak MB':>9} {'x full':>7}"
    )
    full = med["full"]
    for v, name in (("full", "full"), ("lora", f"lora r={args.rank}")):
        m = med[v]
        over, full_over = m["peak_mb"] - m["baseline_mb"], full["peak_mb"] - full["baseline_mb"]
        print(
            f"{name:<14} {int(m['trainable']):>10} {m['step_s'] * 1000:9.1f} "
            f"{m['step_s'] / full['step_s']:7.2f} {over:13.1f} {over / full_over:7.2f} "
            f"{m['peak_mb']:9.1f} {m['peak_mb'] / full['peak_mb']:7.2f}"
        )
    print("target: LoRA peak memory over baseline <= 0.6x full at rank 8 on the small model")


if __name__ == "__main__":
    main()
