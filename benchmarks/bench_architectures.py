"""Scoring time per architecture: memaudit's engine against a bare batched forward of the same
model on the same tokens, measured in the same run.

    python benchmarks/bench_architectures.py [--texts 64] [--tokens 256] [--vocab 8192]
        [--size bench] [--repeats 3] [--archs llama,mamba,...] [--threads N]

- memaudit: ``score_texts`` (the code path of ``memaudit mia``'s target view, no disk cache)
  on the texts' token ids: one forward pass per batch, the scored positions projected in
  chunks, logp, mu, sigma and is_argmax per token.
- bare forward: the same batches (the engine's own packing of the same windows), the model's
  full ``logits`` computed and nothing else: the practical limit.

Every architecture of ``memaudit.lab.archs`` is built freshly initialised at ``--size``
(``bench``: hidden 128, 2 layers, 4 heads, context 512), with a byte-level BPE tokenizer of
``--vocab`` tokens trained on stdlib snippets (speed does not depend on training). The
texts are ``--texts`` windows of exactly ``--tokens`` tokens of that stream. Times are
medians of ``--repeats`` runs after one untimed warm-up. Target (issue 16): memaudit within
1.25x the bare forward's time for every architecture, chunked projection or not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_mia  # noqa: E402

from memaudit.io.corpus import stdlib_snippets  # noqa: E402
from memaudit.lab.archs import ARCH_SIZES, ARCHITECTURES, save_arch_dir  # noqa: E402
from memaudit.lab.lm import token_stream, train_bpe_tokenizer  # noqa: E402
from memaudit.models import load_causal_lm  # noqa: E402
from memaudit.models.hf import LoadOptions  # noqa: E402
from memaudit.scoring.engine import ScoreSettings, Window, _batches, score_texts  # noqa: E402

TARGET = 1.25


def make_texts(tokenizer, n: int, length: int) -> tuple[list[str], list[list[int]]]:
    """``n`` consecutive windows of ``length`` tokens of the snippet stream, and their text."""
    docs = stdlib_snippets(max(64, n * length // 100), chars=1000, seed=7)
    stream = token_stream(tokenizer, docs)
    if len(stream) < n * length:
        raise SystemExit(f"the snippets give {len(stream)} tokens; {n * length} needed")
    ids = [stream[i * length : (i + 1) * length].tolist() for i in range(n)]
    return [tokenizer.decode(t) for t in ids], ids


def run_memaudit(model, texts, ids):
    score_texts(model, texts, ScoreSettings(), token_ids=ids)  # cache_root None: no disk cache
    bench_mia.sync()


def run_bare(model, ids):
    settings = ScoreSettings()
    windows = sorted(
        (Window(i, 0, len(t), 1) for i, t in enumerate(ids)), key=lambda w: (w.end, w.text)
    )
    with torch.no_grad():
        for batch in _batches(windows, settings):
            width = max(w.end for w in batch)
            x = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros_like(x)
            for r, w in enumerate(batch):
                x[r, : w.end] = torch.tensor(ids[w.text])
                mask[r, : w.end] = 1
            model.logits(x.to(model.device), mask.to(model.device))
    bench_mia.sync()


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: lazy initialisation, kernel selection
    return bench_mia.timed(fn, repeats)[0]


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=256, help="tokens per text")
    ap.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary size")
    ap.add_argument("--size", default="bench", choices=sorted(ARCH_SIZES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--archs", default=",".join(ARCHITECTURES), help="comma list")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, fp32 on CPU")
    args = ap.parse_args()
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = sorted(set(archs) - set(ARCHITECTURES))
    if unknown:
        raise SystemExit(f"unknown architectures {unknown}; known: {', '.join(ARCHITECTURES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tokens > ARCH_SIZES[args.size].context:
        raise SystemExit(f"--tokens exceeds the {args.size} size's context")

    tokenizer = train_bpe_tokenizer(stdlib_snippets(1500, seed=99), vocab_size=args.vocab)
    texts, ids = make_texts(tokenizer, args.texts, args.tokens)
    n_tokens = sum(map(len, ids))
    size = ARCH_SIZES[args.size]
    device = LoadOptions(dtype=args.dtype).resolve_device()
    where = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    print(
        f"{len(texts)} texts x {args.tokens} tokens = {n_tokens}; vocab {len(tokenizer)}; "
        f"hidden {size.hidden}, {size.layers} layers; {where}; {args.repeats} repeats (median)\n"
    )
    print(
        f"{'architecture':<13}{'path':<9}{'params':>9}{'memaudit s':>12}{'bare s':>9}{'ratio':>8}"
    )
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            path = save_arch_dir(arch, tokenizer, Path(tmp) / arch, size=args.size)
            with warnings.catch_warnings():  # Mamba's config names no context length
                warnings.simplefilter("ignore")
                model = load_causal_lm(path, LoadOptions(dtype=args.dtype))
            ours = timed(lambda m=model: run_memaudit(m, texts, ids), args.repeats)
            bare = timed(lambda m=model: run_bare(m, ids), args.repeats)
            ratios[arch] = ours / bare
            path_used = "chunked" if model.chunked else "full"
            print(
                f"{arch:<13}{path_used:<9}{model.n_params / 1e6:>8.2f}M"
                f"{ours:>12.3f}{bare:>9.3f}{ratios[arch]:>7.2f}x"
            )
            del model
    worst = max(ratios, key=ratios.__getitem__)
    print(
        f"\nmedian ratio {np.median(list(ratios.values())):.2f}x; worst {worst} "
        f"{ratios[worst]:.2f}x (target <= {TARGET}x for every architecture: "
        f"{'met' if ratios[worst] <= TARGET else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
