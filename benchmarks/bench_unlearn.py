"""Unlearning: step time against plain fine-tuning, and forward passes of the evaluation against a
naive one.

    python benchmarks/bench_unlearn.py [--steps 20] [--methods 3] [--quant-bits 8,4] [--size tiny]

1. Step time. A 4-layer, 256-wide GPT-2; each step sees the same forget batch (16 canaries)
   and retain batch (16 x 128 tokens). Baseline: a plain fine-tuning step (NLL of both
   batches). Every method through the shared loop; NPO also the usual way, with a second
   (reference) model run every step, against ours (reference log-probabilities computed
   once before the first step). Medians of per-step times, ratios to the baseline.
2. Forward passes. ``unlearn-eval`` of an original, ``--methods`` unlearned models and a
   retrained one (forget 16 canaries, holdout their twins, ``--eval-texts`` (100) retain and as
   many general texts, no relearning attack), counted by a hook on the model class: text rows
   through a full forward, and all tokens processed (decoding steps included). The naive
   evaluation runs the model once per metric per model, as per-metric evaluators do: greedy
   decoding for exact and again for loose extraction, one pass for the forget NLL, one per
   attack (two for lowercase), one for retain and general NLL, and the original again for every
   NLL change. Per text, MIA costs 6 passes there and 2 here, extraction 2 generations there and
   1 here, retain/general NLL 1 (2 for a change) there and 1 here, so the ratio depends on how
   large the retain and general sets are. Also the same evaluation a second time, when every
   model's scores come from the cache.

   The quantization attack (``--quant-bits``, default 8 and 4) is counted on both sides: each
   model at each bit width is re-measured. Here: one pass over forget, holdout and retain texts
   (the attacks that need no second view; general not scored). Naive: greedy decoding for exact
   extraction, one pass for the forget NLL, one per attack (loss, zlib, min_k, min_k_pp) over
   forget + holdout, one for the retain NLL and one more of the unquantized model for its change.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.io.corpus import (  # noqa: E402
    corpus_chunks,  # noqa: E402
    load_corpus,
    stdlib_snippets,
)
from memaudit.io.texts import TextRecord, read_texts, write_texts  # noqa: E402
from memaudit.lab.canaries import make_canaries, split_ledger, write_texts_with_prefix  # noqa: E402
from memaudit.lab.lm import (  # noqa: E402
    EOS,
    TrainSettings,
    build_model,
    random_windows,
    save_model_dir,
    token_stream,
    train_bpe_tokenizer,
)
from memaudit.models.generation import greedy_generate  # noqa: E402
from memaudit.models.hf import load_causal_lm  # noqa: E402
from memaudit.unlearn.evaluate import UnlearnEvalConfig, run_unlearn_eval  # noqa: E402
from memaudit.unlearn.idk import alternative_sequences  # noqa: E402
from memaudit.unlearn.loop import LoopSettings, pad_batch, sequence_logp, unlearn_loop  # noqa: E402
from memaudit.unlearn.methods import METHODS  # noqa: E402
from memaudit.unlearn.quantize import quantized_lm  # noqa: E402
from memaudit.unlearn.rmu import Steering  # noqa: E402
from memaudit.unlearn.run import UnlearnConfig, run_unlearn  # noqa: E402


class Counter:
    """Counts what every forward call of the GPT-2 body processes (scoring calls the body
    directly).
    """

    def __init__(self):
        from transformers import GPT2Model

        self.cls, self.original = GPT2Model, GPT2Model.forward
        self.rows = self.tokens = 0
        counter = self

        def counted(model, *args, **kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is not None:
                counter.tokens += ids.numel()
                counter.rows += ids.shape[0] if ids.shape[1] > 1 else 0
            return counter.original(model, *args, **kwargs)

        GPT2Model.forward = counted

    def reset(self) -> dict:
        out = {"text_rows": self.rows, "tokens": self.tokens}
        self.rows = self.tokens = 0
        return out

    def close(self):
        self.cls.forward = self.original


def step_times(model, tokenizer, forget_texts, retain_docs, steps: int) -> dict:
    eos = tokenizer.convert_tokens_to_ids(EOS)
    forget = [ids + [eos] for ids in tokenizer(forget_texts, verbose=False)["input_ids"]]
    windows = random_windows(
        token_stream(tokenizer, retain_docs), TrainSettings(batch_size=16, seq_len=128)
    )
    fixed = windows(0)
    settings = LoopSettings(steps=steps, batch_size=16, retain_batch_size=16, seq_len=128)
    out = {}

    def timed_loop(m, method):
        stamps = [time.perf_counter()]
        records = [TextRecord(f"f{i}", t) for i, t in enumerate(forget_texts)]
        unlearn_loop(
            m,
            forget,
            lambda s: fixed,
            method,
            settings,
            pad_id=eos,
            on_step=lambda s, e: stamps.append(time.perf_counter()),
            alternatives=alternative_sequences(
                tokenizer,
                records,
                [f[:-1] for f in forget],
                UnlearnConfig.__dataclass_fields__["idk_answers"].default,
                seed=0,
                eos=eos,
            )
            if method.needs_alternatives
            else None,
            steering=Steering.build(m, layer=None, coefficient=20.0, alpha=100.0, seed=0)
            if method.needs_activations
            else None,
        )
        return statistics.median(
            b - a for a, b in zip(stamps[1:], stamps[2:])
        )  # the first step carries one-time work

    out["plain fine-tuning"] = _plain_steps(copy.deepcopy(model), forget, fixed, eos, steps)
    for name in METHODS.names():
        out[name] = timed_loop(copy.deepcopy(model), METHODS.get(name))
    out["npo, reference model run every step"] = _npo_with_live_reference(
        copy.deepcopy(model), forget, fixed, eos, steps
    )
    return out


def _plain_steps(model, forget, retain, eos, steps):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids, mask = pad_batch(forget[:16], eos, "cpu")
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        logp, n = sequence_logp(model, ids, mask)
        loss = -logp.sum() / n.sum() + model(input_ids=retain, labels=retain).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def _npo_with_live_reference(model, forget, retain, eos, steps):
    reference = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids, mask = pad_batch(forget[:16], eos, "cpu")
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        logp, _ = sequence_logp(model, ids, mask)
        with torch.no_grad():
            ref, _ = sequence_logp(reference, ids, mask)
        loss = (2 / 0.1) * torch.nn.functional.softplus(0.1 * (logp - ref)).mean() + model(
            input_ids=retain, labels=retain
        ).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def naive_evaluation(
    paths: dict[str, str], cfg: UnlearnEvalConfig, forget, holdout, retain, general
) -> None:
    """Every metric runs the model itself, one text at a time (what per-metric evaluators do)."""
    lms = {name: load_causal_lm(p) for name, p in paths.items()}

    def nll(lm, texts):
        for t in texts:
            ids = torch.tensor([lm.encode([t])[0]])
            with torch.no_grad():
                lm.model(input_ids=ids, labels=ids)

    for name, lm in list(lms.items()):
        prompts = [ids[: cfg.prefix_tokens] for ids in lm.encode(forget)]
        for _ in ("exact", "loose"):
            for p in prompts:
                greedy_generate(lm, [p], cfg.suffix_tokens, batch_size=1)
        nll(lm, forget)  # forget NLL
        for attack in ("loss", "zlib", "min_k", "min_k_pp", "lowercase"):
            nll(lm, forget + holdout)
            if attack == "lowercase":
                nll(lm, [t.lower() for t in forget + holdout])
        for texts in (retain, general):
            nll(lm, texts)
            if name != "original":
                nll(lms["original"], texts)  # the change from the original, recomputed
        for bits in cfg.bit_widths():  # the quantization attack, per metric
            q = quantized_lm(lm, bits=bits, group_size=cfg.quant_group_size)
            for p in prompts:
                greedy_generate(q, [p], cfg.suffix_tokens, batch_size=1)
            nll(q, forget)
            for _ in ("loss", "zlib", "min_k", "min_k_pp"):
                nll(q, forget + holdout)
            nll(q, retain)
            nll(lm, retain)  # the change from the unquantized model, recomputed


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--methods", type=int, default=3)
    ap.add_argument("--eval-texts", type=int, default=100, help="retain and general texts each")
    ap.add_argument("--quant-bits", default="8,4", help="the quantization attack's bit widths")
    ap.add_argument(
        "--size", default="tiny", help="lab model size (tiny: the reported numbers; micro: a check)"
    )
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok = train_bpe_tokenizer(stdlib_snippets(1500, seed=7), vocab_size=4096)
        original = save_model_dir(build_model(tok, size=args.size, seed=0), tok, tmp / "original")
        canaries = make_canaries(repetitions=(8,), per_level=16)
        forget_c, holdout_c = split_ledger(canaries, min_repetitions=8)
        forget_f = write_texts_with_prefix(tmp / "forget.jsonl", forget_c)
        holdout_f = write_texts_with_prefix(tmp / "holdout.jsonl", holdout_c)
        retain_docs = load_corpus("stdlib", max_chars=100_000).docs
        retain_f = write_texts(
            tmp / "retain.jsonl", ((f"r{i}", d) for i, d in enumerate(retain_docs))
        )
        general_f = write_texts(
            tmp / "general.jsonl",
            ((f"g{i}", t) for i, t in enumerate(stdlib_snippets(args.eval_texts, seed=3))),
        )

        print(
            "== step time (median over steps; ratio to a plain fine-tuning step on the same "
            "batches) =="
        )
        times = step_times(
            load_causal_lm(original).model.float(),
            tok,
            [c.text for c in forget_c],
            retain_docs,
            args.steps,
        )
        for name, t in times.items():
            print(f"{name:<40} {t * 1000:8.1f} ms  {t / times['plain fine-tuning']:5.2f}x")

        dirs = [
            run_unlearn(
                UnlearnConfig(
                    model=str(original),
                    forget=str(forget_f),
                    method="ga",
                    steps=2,
                    out=str(tmp / f"u{i}"),
                    seed=i,
                )
            )
            for i in range(args.methods)
        ]
        retrained = save_model_dir(build_model(tok, size=args.size, seed=1), tok, tmp / "retrained")
        cfg = UnlearnEvalConfig(
            original=str(original),
            unlearned=tuple(map(str, dirs)),
            retrained=str(retrained),
            forget=str(forget_f),
            holdout=str(holdout_f),
            retain=str(retain_f),
            general=str(general_f),
            retain_chars=None,
            eval_texts=args.eval_texts,
            relearn_steps=0,
            quant_bits=args.quant_bits,
            n_bootstrap=100,
            out=str(tmp / "eval"),
            cache_dir=str(tmp / "cache"),
            report=False,
        )
        counter = Counter()
        try:
            run_unlearn_eval(cfg)
            ours = counter.reset()
            run_unlearn_eval(UnlearnEvalConfig(**{**cfg.to_dict(), "out": str(tmp / "eval2")}))
            ours_warm = counter.reset()
            paths = {
                "original": str(original),
                **{f"u{i}": str(d) for i, d in enumerate(dirs)},
                "retrained": str(retrained),
            }
            forget = [r.text for r in read_texts(forget_f).records]
            holdout = [r.text for r in read_texts(holdout_f).records]
            retain = corpus_chunks(retain_docs, args.eval_texts, cfg.chunk_chars)
            general = corpus_chunks(
                [r.text for r in read_texts(general_f).records], args.eval_texts, cfg.chunk_chars
            )
            naive_evaluation(paths, cfg, forget, holdout, retain, general)
            naive = counter.reset()
        finally:
            counter.close()
        n_models = len(paths)
        print(
            f"\n== forward passes of one evaluation ({n_models} models, each also quantized to "
            f"{args.quant_bits or 'no'} bits) =="
        )
        for name, c in (
            ("naive, per metric", naive),
            ("memaudit unlearn-eval", ours),
            ("memaudit, second run (cache)", ours_warm),
        ):
            print(f"{name:<30} text rows {c['text_rows']:7d}   tokens {c['tokens']:9d}")
        print(
            f"ratio naive / memaudit: text rows {naive['text_rows'] / ours['text_rows']:.1f}x, "
            f"tokens {naive['tokens'] / ours['tokens']:.1f}x "
            f"(target >= 3x); second run {naive['text_rows'] / max(1, ours_warm['text_rows']):.1f}x"
        )


if __name__ == "__main__":
    main()
