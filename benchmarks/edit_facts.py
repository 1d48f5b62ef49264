"""Do the edits take on a small model that memorized facts? Efficacy and paraphrase success of
ROME, MEMIT and EMMET, one edit at a time (batch 1, the original restored between) and all
edits at once (ROME then applies them one after another), plus the edit time per fact.

    python benchmarks/edit_facts.py [--subjects 30] [--steps 2500] [--edits 8]

A GPT-2 of 2 blocks, width 64, is trained on every fact of ``--subjects`` invented subjects
(``memaudit.editing.facts``, three relations each, 50 shuffled copies) until it knows them, then
each method edits block 0 (the only block with a later one). Efficacy: the new answer's mean
NLL after the prompt is below the old one's; paraphrase: the same after the relation's other
template. Single runs on 2 cores; a 4-core machine halves the training time only.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from memaudit.editing.compute import target_nll  # noqa: E402
from memaudit.editing.covariance import key_moment  # noqa: E402
from memaudit.editing.facts import edit_request, fact_text, make_facts  # noqa: E402
from memaudit.editing.methods import EditSettings, apply_edits  # noqa: E402
from memaudit.editing.requests import _request, encode  # noqa: E402
from memaudit.lab.lm import (  # noqa: E402
    TrainSettings,
    build_model,
    fit,
    random_windows,
    token_stream,
    train_bpe_tokenizer,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subjects", type=int, default=30)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--edits", type=int, default=8)
    args = parser.parse_args()
    facts = make_facts(args.subjects, seed=0)
    texts = [fact_text(f) for f in facts]
    rng = random.Random(0)
    corpus = [t for _ in range(50) for t in rng.sample(texts, len(texts))]
    tok = train_bpe_tokenizer(texts, vocab_size=1000)
    model = build_model(tok, size="micro", context=64, seed=0)
    stream = token_stream(tok, corpus)
    settings = TrainSettings(steps=args.steps, batch_size=32, seq_len=64, lr=2e-3, warmup=20)
    t0 = time.perf_counter()
    fit(model, random_windows(stream, settings), settings)
    print(f"trained {args.steps} steps in {time.perf_counter() - t0:.0f} s")
    reqs = [_request(edit_request(f, facts), "facts", i) for i, f in enumerate(facts[: args.edits])]

    def won(r, prompt: str) -> bool:
        """The new answer is more likely than the old after ``prompt``."""
        pair = [encode(tok, prompt, r.target_new), encode(tok, prompt, r.target_true)]
        with torch.no_grad():
            new, old = target_nll(model, pair)
        return bool(new < old)

    def wins(prompts: list[str]) -> float:
        return sum(won(r, p) for r, p in zip(reqs, prompts)) / len(reqs)

    true = [encode(tok, r.prompt, r.target_true) for r in reqs]
    with torch.no_grad():
        print(f"old answers' NLL: mean {target_nll(model, true).mean():.3f}; "
              f"efficacy before editing {wins([r.prompt for r in reqs]):.2f}")  # fmt: skip
    moments = {0: key_moment(model, stream[:20000], 0).moment}
    base = copy.deepcopy(model.state_dict())
    encoded = [encode(tok, r.prompt, r.target_new, r.subject) for r in reqs]
    for method in ("rome", "memit", "emmet"):
        edit = EditSettings(method=method, layers=(0,))
        eff, para, seconds = [], [], []
        for i, e in enumerate(encoded):  # batch 1
            model.load_state_dict(base)
            t0 = time.perf_counter()
            apply_edits(model, [e], moments, edit)
            seconds.append(time.perf_counter() - t0)
            eff.append(won(reqs[i], reqs[i].prompt))
            para.append(won(reqs[i], reqs[i].paraphrases[0]))
        model.load_state_dict(base)
        apply_edits(model, encoded, moments, edit)  # all at once
        print(
            f"{method:6s} batch 1: efficacy {sum(eff) / len(eff):.2f}, paraphrase "
            f"{sum(para) / len(para):.2f}, {statistics.median(seconds):.2f} s per edit (median); "
            f"batch {len(encoded)}: efficacy {wins([r.prompt for r in reqs]):.2f}, paraphrase "
            f"{wins([r.paraphrases[0] for r in reqs]):.2f}"
        )  # fmt: skip


if __name__ == "__main__":
    main()
