"""The whole attack table's cost in forward-pass equivalents per text, measured in one run.

    python benchmarks/bench_attacks.py [--texts 128] [--shadows 2] [--repeats 3]

The unit is one plain target scoring pass over the texts (``score_texts``, no disk cache),
timed in the same run. Each view an attack needs (the built-in ``lowercase`` and
``reference``, and every registered one) is computed alone, ``--repeats`` times; the table
prints its median time over the unit's, per model it runs (the shadows view runs every
shadow), and the texts it scored per text from its own ``ScoreStats``. Then the views of
every default attack (``--attacks all``) together, as ``mia`` computes them.

Target (issue 15): every attack except ``samia``, ``neighbourhood`` and ``gradnorm`` within
3 passes per text per model. The models are freshly initialised 4-layer, 256-wide GPT-2s
with a 4k BPE vocabulary (speed does not depend on training; the shadows get 1 step) and a
2-layer, 64-wide BERT for the neighbours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.attacks import parse_attacks  # noqa: E402
from memaudit.attacks.base import ATTACKS, BUILTIN_VIEWS, VIEWS  # noqa: E402
from memaudit.attacks.views import ViewContext, compute_views, prepare_views  # noqa: E402
from memaudit.io.corpus import stdlib_snippets  # noqa: E402
from memaudit.lab.lm import build_model, save_model_dir, train_bpe_tokenizer  # noqa: E402
from memaudit.mia.config import MiaConfig, ShadowsTrainConfig  # noqa: E402
from memaudit.mia.shadows import run_shadows_train  # noqa: E402
from memaudit.models import load_causal_lm  # noqa: E402
from memaudit.scoring.engine import ScoreSettings, score_texts  # noqa: E402

EXPENSIVE = {"samia", "neighbourhood", "gradnorm"}


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def write_jsonl(path: Path, texts: list[str]) -> str:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(path)


def make_mlm(texts: list[str], out: Path) -> Path:
    """A random-init BERT masked LM with a WordPiece vocabulary of the texts."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    wp = BertWordPieceTokenizer(lowercase=False)
    wp.train_from_iterator(texts, vocab_size=2000, min_frequency=2)
    out.mkdir()
    wp.save(str(out / "tokenizer.json"))
    tok = BertTokenizerFast(tokenizer_file=str(out / "tokenizer.json"), do_lower_case=False)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def setup(tmp: Path, args) -> tuple[ViewContext, list[str]]:
    snippets = stdlib_snippets(1500 + args.texts + 100, chars=args.chars, seed=3)
    corpus, texts, extra = snippets[:1500], snippets[1500 : 1500 + args.texts], snippets[-100:]
    tok = train_bpe_tokenizer(corpus, vocab_size=4096)
    dirs = [
        save_model_dir(build_model(tok, size="tiny", context=256, seed=s), tok, tmp / f"m{s}")
        for s in (0, 1)
    ]
    target, reference = (load_causal_lm(d) for d in dirs)
    pool = write_jsonl(tmp / "pool.jsonl", texts)
    shadows = run_shadows_train(
        ShadowsTrainConfig(
            pool=pool,
            out=str(tmp / "shadows"),
            n_models=args.shadows,
            tokenizer=str(dirs[0]),
            steps=1,
            checkpoint_every=0,
        )
    )
    counts = torch.bincount(
        torch.tensor([i for ids in target.encode(corpus) for i in ids]), minlength=len(tok)
    )
    freq = tmp / "counts.jsonl"
    freq.write_text(
        "".join(json.dumps({"id": i, "count": int(c)}) + "\n" for i, c in enumerate(counts) if c)
    )
    options = {
        **MiaConfig(model=str(dirs[0]), members=pool, nonmembers=pool).to_dict(),
        "reference": str(dirs[1]),
        "prefix_texts": write_jsonl(tmp / "prefix.jsonl", extra[:50]),
        "member_prefix_texts": write_jsonl(tmp / "member_prefix.jsonl", texts[:50]),
        "recall_shots": 5,
        "token_frequencies": str(freq),
        "shadows": str(shadows),
        "population": write_jsonl(tmp / "population.jsonl", extra[50:]),
        "neighbour_model": str(make_mlm(corpus, tmp / "mlm")),
    }
    ctx = ViewContext(target, texts, ScoreSettings(), options, reference=reference)
    return ctx, texts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--chars", type=int, default=400)
    parser.add_argument("--shadows", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ctx, texts = setup(Path(tmp), args)
        n = len(texts)
        settings = ctx.settings
        score_texts(ctx.target, texts[:4], settings)  # warm-up, untimed
        unit = statistics.median(
            timed(lambda: score_texts(ctx.target, texts, settings))[0] for _ in range(args.repeats)
        )
        print(
            f"{n} texts, {args.shadows} shadows, {torch.get_num_threads()} threads, median of "
            f"{args.repeats}; unit = one plain target pass over the texts = {unit:.2f} s"
        )
        lowered = [t.lower() for t in texts]
        builtin = {
            "lowercase": lambda: score_texts(ctx.target, lowered, settings)[1],
            "reference": lambda: score_texts(ctx.reference, texts, settings)[1],
        }
        ratio, scored = {}, {}
        for name in [*BUILTIN_VIEWS, *VIEWS.names()]:
            if name in builtin:
                run = builtin[name]
            else:
                view = VIEWS.get(name)

                def run(view=view):
                    return view.compute(ctx, view.prepare(ctx))[1]

            runs = [timed(run) for _ in range(args.repeats)]
            stats = runs[0][1]
            stats = stats if isinstance(stats, dict) else {"model": stats}
            ratio[name] = statistics.median(r[0] for r in runs) / unit
            scored[name] = sum(getattr(s, "texts", 0) for s in stats.values()) / n
        # the models each view runs: a view's passes are shared by every attack that needs it
        runs_on = {"reference": {"reference"}, "shadows": set(range(args.shadows))}
        runs_on["shadow_population"] = runs_on["shadows"]
        print(f"{'view':20s} {'x unit':>7s} {'texts scored per text':>22s}")
        for name in ratio:
            print(f"{name:20s} {ratio[name]:7.2f} {scored[name]:22.2f}")
        print(f"\n{'attack':14s} {'x unit':>7s} {'models':>6s} {'per model':>9s}  views")
        worst = 0.0
        for attack in ATTACKS:
            models = {"target"}.union(*(runs_on.get(v, set()) for v in attack.needs))
            total = 1 + sum(ratio[v] for v in attack.needs)  # 1: the shared target pass
            per_model = total / len(models)
            if attack.name not in EXPENSIVE:
                worst = max(worst, per_model)
            views = ", ".join(sorted(attack.needs)) or "-"
            print(f"{attack.name:14s} {total:7.2f} {len(models):6d} {per_model:9.2f}  {views}")
        print(f"\nworst default attack: {worst:.2f} passes per text per model (target <= 3)")

        specs = parse_attacks("all")
        seconds = statistics.median(
            timed(lambda: compute_views(specs, ctx, prepare_views(specs, ctx)))[0]
            for _ in range(args.repeats)
        )
        print(
            f"every default attack's views in one mia-like run: {seconds / unit:.2f} x unit "
            f"(target, reference and {args.shadows} shadows)"
        )


if __name__ == "__main__":
    main()
