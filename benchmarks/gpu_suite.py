"""The GPU check: the attack suite on 1B-sized models in bf16, against baselines of the same run.

    python benchmarks/gpu_suite.py [--texts 2000] [--tokens 512] [--naive-texts 64]
    python benchmarks/gpu_suite.py --tiny          # a CPU smoke run of the same code

For a random-initialised Pythia-1B-sized GPT-NeoX and a Llama-3.2-1B-sized Llama (speed
does not depend on trained weights; a BPE tokenizer trained on the standard library feeds
ids below the models' full vocabularies, which are still projected in full):

- memaudit: `score_views` + loss, zlib, min_k, min_k_pp, lowercase, reference (the code path of
  `memaudit mia`, no disk cache; the reference is a second model of the same config);
- bare forward: the same batched forward passes, logits only (bench_mia.run_bare);
- naive: one text at a time, one forward per attack (bench_mia.run_naive), on the first
  `--naive-texts` texts, its tokens/s extrapolated (it is too slow to run on all);
- peak GPU memory of the memaudit run; bf16 vs fp32 agreement of loss and min_k_pp per text
  on `--agree-texts` texts.

Targets (issue 16): memaudit >= 50% of bare-forward tokens/s in bf16; moonshot: 7 x 2,000
texts with 6 attacks on the Pythia-1B config in under 60 s (printed as a projection of
the measured 2,000).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_mia  # noqa: E402

from memaudit.io.corpus import stdlib_snippets  # noqa: E402
from memaudit.lab.lm import train_bpe_tokenizer  # noqa: E402
from memaudit.models.heads import text_heads  # noqa: E402
from memaudit.models.hf import LoadOptions, load_causal_lm  # noqa: E402

# name -> (transformers config class, its settings); --tiny shrinks every size
CONFIGS = {
    "pythia-1b (GPT-NeoX)": (
        "GPTNeoXConfig",
        dict(
            hidden_size=2048,
            num_hidden_layers=16,
            num_attention_heads=8,
            intermediate_size=8192,
            vocab_size=50304,
            rotary_pct=0.25,
            max_position_embeddings=2048,
        ),
    ),
    "llama-3.2-1b (Llama)": (
        "LlamaConfig",
        dict(
            hidden_size=2048,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            intermediate_size=8192,
            vocab_size=128256,
            tie_word_embeddings=True,
            max_position_embeddings=2048,
        ),
    ),
}
TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=128,
    vocab_size=8192,
    num_attention_heads=4,
)


def make_model_dir(config_name: str, settings: dict, tokenizer, out: Path, seed: int) -> Path:
    import transformers

    torch.manual_seed(seed)
    config = getattr(transformers, config_name)(**settings)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def texts_of(tokenizer_model, n: int, tokens: int) -> list[str]:
    """n standard-library texts of at least ``tokens`` tokens, cut to exactly that many."""
    pool = stdlib_snippets(3 * n, chars=8 * tokens, seed=7)
    heads, cut = text_heads(tokenizer_model, pool, tokens)
    return [h for h, c in zip(heads, cut) if c][:n]


def agreement(model_dirs: list[Path], texts: list[str]) -> dict[str, float]:
    """Largest per-text difference of loss and min_k_pp between bf16 and fp32 scoring."""
    scores = {}
    for dtype in ("bfloat16", "float32"):
        target, reference = (load_causal_lm(d, LoadOptions(dtype=dtype)) for d in model_dirs)
        scores[dtype] = bench_mia.run_memaudit(target, reference, texts)
        del target, reference
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {
        name: float(np.max(np.abs(scores["bfloat16"][name] - scores["float32"][name])))
        for name in ("loss", "min_k_pp")
    }


def run_config(name: str, config_name: str, settings: dict, tokenizer, args, tmp: Path) -> None:
    dirs = [
        make_model_dir(config_name, settings, tokenizer, tmp / f"{config_name}{seed}", seed)
        for seed in (0, 1)
    ]
    measure(name, *(load_causal_lm(d, LoadOptions(dtype=args.dtype)) for d in dirs), args)
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    diffs = agreement(dirs, texts_of(load_causal_lm(dirs[0]), args.agree_texts, args.tokens))
    print(
        "bf16 vs fp32, largest per-text difference: "
        + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
    )


def measure(name: str, target, reference, args) -> None:
    texts = texts_of(target, args.texts, args.tokens)
    n_tokens = sum(len(t) for t in target.encode(texts))
    print(
        f"\n## {name}: {target.n_params / 1e9:.2f}B params, vocab {target.vocab_size}, "
        f"{target.dtype}, {target.device}; {len(texts)} texts, {n_tokens} tokens "
        f"(chunked projection: {target.chunked})"
    )
    bench_mia.run_memaudit(target, reference, texts[:32])  # warm-up: kernels, allocator
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    ours_s, _ = bench_mia.timed(
        lambda: bench_mia.run_memaudit(target, reference, texts), args.repeats
    )
    cuda = torch.cuda.is_available()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    bare_s, _ = bench_mia.timed(lambda: bench_mia.run_bare(target, reference, texts), args.repeats)
    few = texts[: args.naive_texts]
    few_tokens = sum(len(t) for t in target.encode(few))
    naive_s, _ = bench_mia.timed(lambda: bench_mia.run_naive(target, reference, few), 1)
    naive_tps = few_tokens / naive_s
    print(f"{'method':<14}{'tokens/s':>12}")
    for method, tps in (
        ("memaudit", n_tokens / ours_s),
        ("bare forward", n_tokens / bare_s),
        (f"naive ({len(few)})", naive_tps),
    ):
        print(f"{method:<14}{tps:>12.0f}")
    print(
        f"memaudit: {bare_s / ours_s:.0%} of bare-forward tokens/s (target >= 50%); "
        f"{n_tokens / ours_s / naive_tps:.1f}x naive; peak GPU memory {peak:.1f} GiB; "
        f"{ours_s:.1f} s for the suite, so 7 x {len(texts)} texts ~ {7 * ours_s:.0f} s "
        "(moonshot: < 60 s for the Pythia config)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--tokens", type=int, default=512, help="tokens per text")
    ap.add_argument("--naive-texts", type=int, default=64)
    ap.add_argument("--agree-texts", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--tiny", action="store_true", help="tiny configs and few texts (CPU check)")
    args = ap.parse_args()
    if args.tiny:
        args.texts, args.tokens, args.naive_texts, args.agree_texts = 24, 64, 4, 8
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"# memaudit GPU suite on {device}, torch {torch.__version__}")
    tokenizer = train_bpe_tokenizer(stdlib_snippets(2000, seed=99), vocab_size=8192)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (config_name, settings) in CONFIGS.items():
            settings = {**settings, **TINY} if args.tiny else settings
            if args.tiny and config_name == "LlamaConfig":
                settings["num_key_value_heads"] = 2
            run_config(name, config_name, settings, tokenizer, args, Path(tmp))


if __name__ == "__main__":
    main()
