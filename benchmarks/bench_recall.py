"""ReCaLL's conditional view: the prefix's cache computed once, against re-running the prefix.

    python benchmarks/bench_recall.py [--texts 128] [--shots 5] [--repeats 3]

- plain: one target scoring pass over the texts (``score_texts``, no disk cache): the cost of
  the ``target`` view, the unit the issue counts in.
- cached: ``score_with_prefix`` (the ``nonmember_prefix`` view): one pass of the prefix, then
  every batch of texts after a copy of its key/value cache.
- rerun, batched: prefix + text for every text through the same batched engine (what a
  careful implementation without the cache does).
- rerun, per text: one forward of prefix + text per text, batch size 1 (ReCaLL's authors'
  code).

Median seconds of ``--repeats`` runs. The model is a 4-layer, 256-wide GPT-2 with a 4k BPE
vocabulary and a 1,024-token context, freshly initialised (speed does not depend on
training). Target (issue 15): cached >= 2x faster than re-running the prefix at 5 shots.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.io.corpus import stdlib_snippets  # noqa: E402
from memaudit.lab.lm import build_model, save_model_dir, train_bpe_tokenizer  # noqa: E402
from memaudit.models import load_causal_lm  # noqa: E402
from memaudit.scoring.engine import ScoreSettings, score_texts  # noqa: E402
from memaudit.scoring.prefixed import score_with_prefix  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--chars", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    snippets = stdlib_snippets(1500 + args.texts + args.shots, chars=args.chars, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_bpe_tokenizer(snippets[:1500], vocab_size=4096)
        model_dir = save_model_dir(
            build_model(tok, size="tiny", context=1024, seed=0), tok, Path(tmp) / "m"
        )
        model = load_causal_lm(model_dir)
        texts = snippets[1500 : 1500 + args.texts]
        ids = model.encode(texts)
        prefix = model.encode(["".join(snippets[1500 + args.texts :])])[0]
        settings = ScoreSettings()
        joined = [prefix + t for t in ids]
        joined_texts = [f"{i}" for i in range(len(joined))]  # names only: no disk cache

        def per_text() -> None:
            for x in joined:
                t = torch.tensor([x], device=model.device)
                model.logits(t, torch.ones_like(t))

        runs = {
            "plain": lambda: score_texts(model, texts, settings, token_ids=ids),
            "cached": lambda: score_with_prefix(model, prefix, texts, ids, settings),
            "rerun, batched": lambda: score_texts(model, joined_texts, settings, token_ids=joined),
            "rerun, per text": per_text,
        }
        score_texts(model, texts[:4], settings, token_ids=ids[:4])  # warm-up, untimed
        seconds = {
            name: statistics.median(timed(fn) for _ in range(args.repeats))
            for name, fn in runs.items()
        }
    print(
        f"{args.texts} texts of {statistics.mean(map(len, ids)):.0f} tokens on average, "
        f"prefix of {args.shots} shots = {len(prefix)} tokens, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    for name, s in seconds.items():
        print(
            f"{name:16s} {s:7.2f} s  {s / seconds['plain']:5.2f}x plain  "
            f"cached is {s / seconds['cached']:5.2f}x faster"
        )


if __name__ == "__main__":
    main()
