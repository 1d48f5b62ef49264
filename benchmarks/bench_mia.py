"""Throughput of the membership-inference suite, against two baselines measured in the same run.

    python benchmarks/bench_mia.py [--texts 256] [--chars 600] [--repeats 3]

- naive: shaped like common MIA code: one text at a time (batch size 1), one forward pass
  per attack (loss, zlib, min_k, min_k_pp: one each; lowercase and reference: two each).
- bare forward: the same batched forward passes memaudit makes (target on the texts, target
  on the lowercased texts, reference on the texts), computing logits only: the practical limit.
- memaudit: score_views (the code path of `memaudit mia`, no disk cache) + every attack.

Tokens/s counts the tokens of the audited texts, the same numerator for all three. The
models are 4-layer, 256-wide GPT-2s with a 4k BPE vocabulary, freshly initialised (speed
does not depend on training). Targets (issue 2): >= 5x naive, within 1.25x of bare forward.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.attacks import parse_attacks  # noqa: E402
from memaudit.attacks.views import score_views  # noqa: E402
from memaudit.io.corpus import stdlib_snippets  # noqa: E402
from memaudit.lab.lm import build_model, save_model_dir, train_bpe_tokenizer  # noqa: E402
from memaudit.models import load_causal_lm  # noqa: E402
from memaudit.models.hf import LoadOptions  # noqa: E402
from memaudit.scoring.engine import ScoreSettings, Window, _batches, windows_for  # noqa: E402

ATTACKS = "loss,zlib,min_k,min_k_pp,lowercase,reference"


def make_models(workdir: Path, options: LoadOptions):
    tok = train_bpe_tokenizer(stdlib_snippets(1500, seed=99), vocab_size=4096)
    dirs = []
    for seed in (0, 1):
        model = build_model(tok, size="tiny", context=256, seed=seed)
        dirs.append(save_model_dir(model, tok, workdir / f"model{seed}"))
    return [load_causal_lm(d, options) for d in dirs]


def run_memaudit(target, reference, texts):
    inputs, _ = score_views(
        target, reference, texts, ScoreSettings(), lowercase=True
    )  # no disk cache
    return {s.column: s(inputs) for s in parse_attacks(ATTACKS)}


def run_bare(target, reference, texts):
    settings = ScoreSettings()
    for model, view in ((target, texts), (target, [t.lower() for t in texts]), (reference, texts)):
        ids = model.encode(view)
        length, stride = settings.window(model)
        windows = sorted(
            (
                Window(i, b, e, f)
                for i, t in enumerate(ids)
                for b, e, f in windows_for(len(t), length, stride)
            ),
            key=lambda w: (w.end - w.begin, w.text),
        )
        for batch in _batches(windows, settings):
            width = max(w.end - w.begin for w in batch)
            x = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros_like(x)
            for r, w in enumerate(batch):
                x[r, : w.end - w.begin] = torch.tensor(ids[w.text][w.begin : w.end])
                mask[r, : w.end - w.begin] = 1
            model.logits(x.to(model.device), mask.to(model.device))
    sync()


def naive_logp(model, text):
    """One forward pass of one text; per-token log-softmax (what typical MIA code does per
    attack).
    """
    ids = torch.tensor([model.encode([text])[0]], device=model.device)
    with torch.no_grad():
        logits = model.logits(ids, None)[0, :-1].float()
    lp = torch.log_softmax(logits, -1)
    return lp, lp[torch.arange(ids.shape[1] - 1), ids[0, 1:]]


def run_naive(target, reference, texts):
    out = {name: [] for name in ATTACKS.split(",")}
    for text in texts:
        out["loss"].append(naive_logp(target, text)[1].mean().item())
        out["zlib"].append(
            naive_logp(target, text)[1].mean().item() / len(zlib.compress(text.encode()))
        )
        tok = naive_logp(target, text)[1].cpu().numpy()
        out["min_k"].append(np.sort(tok)[: max(1, int(0.2 * len(tok)))].mean())
        lp, tok = naive_logp(target, text)
        p = lp.exp()
        mu = (p * lp).sum(-1)
        sigma = ((p * lp * lp).sum(-1) - mu**2).clamp_min(0).sqrt()
        z = ((tok - mu) / sigma).cpu().numpy()
        out["min_k_pp"].append(np.sort(z)[: max(1, int(0.2 * len(z)))].mean())
        nll = -naive_logp(target, text)[1].mean().item()
        out["lowercase"].append(-naive_logp(target, text.lower())[1].mean().item() / nll)
        out["reference"].append(
            naive_logp(target, text)[1].mean().item() - naive_logp(reference, text)[1].mean().item()
        )
    return {k: np.array([float(x) for x in v]) for k, v in out.items()}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats):
    """Median seconds of ``repeats`` calls (a GPU's queued work finished inside each) and the
    last result."""
    times, result = [], None
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--texts", type=int, default=256)
    ap.add_argument("--chars", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, fp32 on CPU")
    ap.add_argument(
        "--profile", action="store_true", help="also print where memaudit's time goes (cProfile)"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        target, reference = make_models(Path(tmp), LoadOptions(dtype=args.dtype))
    # the naive loop cannot window, so every text (and its lowercased form) must fit the context
    fits = lambda t: max(len(x) for x in target.encode([t, t.lower()])) <= target.max_length  # noqa: E731
    texts = [t for t in stdlib_snippets(2 * args.texts, chars=args.chars, seed=5) if fits(t)][
        : args.texts
    ]
    n_tokens = sum(len(t) for t in target.encode(texts))
    device = (
        torch.cuda.get_device_name()
        if target.device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    print(
        f"{len(texts)} texts, {n_tokens} tokens; {device}; {target.dtype}; {args.repeats} repeats "
        "(median)"
    )

    rows = {}
    rows["memaudit"], ours = timed(lambda: run_memaudit(target, reference, texts), args.repeats)
    rows["bare forward"], _ = timed(lambda: run_bare(target, reference, texts), args.repeats)
    rows["naive"], naive = timed(lambda: run_naive(target, reference, texts), max(1, args.repeats))
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(run_memaudit, target, reference, texts)
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    tol = (
        2e-3 if target.dtype == torch.float32 else 5e-2
    )  # bf16 logits in the naive loop are coarse
    for name in ours:  # same numbers, or the comparison means nothing
        np.testing.assert_allclose(ours[name], naive[name], rtol=tol, atol=tol / 10, err_msg=name)

    print(f"\n{'method':<14}{'seconds':>10}{'tokens/s':>12}{'memaudit speed-up':>20}")
    for name, sec in rows.items():
        print(f"{name:<14}{sec:>10.2f}{n_tokens / sec:>12.0f}{sec / rows['memaudit']:>19.2f}x")
    print(
        f"\nmemaudit vs naive:        {rows['naive'] / rows['memaudit']:.2f}x faster   (target >= "
        "5x)"
    )
    print(
        f"memaudit vs bare forward: {rows['memaudit'] / rows['bare forward']:.2f}x the time "
        "(target <= 1.25x)"
    )


if __name__ == "__main__":
    main()
