"""Copyright traps end to end: make from a reference, inject, train, detect."""

import json
import math
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from memaudit.errors import InputError
from memaudit.io.corpus import stdlib_snippets
from memaudit.lab.canaries import write_ledger
from memaudit.lab.train import TrainConfig, run_train
from memaudit.mia.config import TrapDetectConfig, TrapMakeConfig, trap_recipe
from memaudit.mia.traps import (
    conditional_logp,
    inject_traps,
    make_traps,
    run_traps_detect,
    trap_contexts,
)
from memaudit.models import load_causal_lm


def _logp(lm, text: str) -> np.ndarray:
    """(n-1,) log p of each token after the first, from the model's own logits."""
    ids = lm.tokenizer(text)["input_ids"]
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0].double()  # (n, V)
    return torch.log_softmax(logits[:-1], -1)[torch.arange(len(ids) - 1), ids[1:]].numpy()


def _set_jaccard(a, b) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b)


def _trigrams(ids):
    return [tuple(ids[i : i + 3]) for i in range(len(ids) - 2)]


@pytest.fixture(scope="module")
def reference(reference_dir):
    return load_causal_lm(reference_dir)


@pytest.fixture(scope="module")
def traps(reference):
    return make_traps(
        reference,
        lengths=(20, 30),
        per_bucket=8,
        recipe=trap_recipe(buckets=2),
        pool_factor=60,
        seed=0,
    )


def test_traps_are_distinct_bucketed_and_paired(traps, reference):
    assert len(traps) == 64 and sum(t.member for t in traps) == 32
    tok = reference.tokenizer
    for t in traps:
        ids = tok(t.text, verbose=False)["input_ids"]
        assert len(ids) == t.meta["length"]  # survives decode / re-encode at its length
        lo, hi = (
            t.meta["bucket_edges"][t.meta["bucket"]],
            t.meta["bucket_edges"][t.meta["bucket"] + 1],
        )
        assert lo <= t.meta["perplexity"] <= hi
        twin = next(c for c in traps if c.id == t.pair_id)
        assert (
            twin.member != t.member
            and twin.meta["bucket"] == t.meta["bucket"]
            and twin.meta["length"] == t.meta["length"]
        )
        assert t.meta["recipe"]["name"] == "memaudit" and t.meta["temperature"] in (
            0.7,
            1.0,
            1.3,
            1.6,
        )
    for t in traps[::9]:  # perplexity under the reference, from its logits
        assert t.meta["perplexity"] == pytest.approx(
            math.exp(-_logp(reference, t.text).mean()), rel=1e-4
        )
    for length in (20, 30):  # no near-duplicate among all the traps and controls of a length
        same = [tok(t.text)["input_ids"] for t in traps if t.meta["length"] == length]
        for i, a in enumerate(same):
            for b in same[i + 1 :]:
                assert _set_jaccard(_trigrams(a), _trigrams(b)) <= 0.2


def test_paper_recipe_fixed_even_buckets_and_token_set_dedup(reference):
    recipe = trap_recipe("paper", buckets=2, perplexity_range=(1, 1000))
    assert recipe.temperatures == tuple(np.arange(0.5, 4, 0.5))  # the authors' default sweep
    made = make_traps(reference, lengths=(12,), per_bucket=2, recipe=recipe, pool_factor=25, seed=0)
    assert len(made) == 8 and sum(t.member for t in made) == 4
    tok = reference.tokenizer
    units = []
    for t in made:
        ppl = math.exp(-_logp(reference, t.text).mean())
        b = t.meta["bucket"]
        assert 1 + 500 * b <= ppl < 1 + 500 * (b + 1)  # fixed buckets [1, 501), [501, 1001)
        assert t.meta["recipe"]["name"] == "paper" and t.meta["temperature"] in recipe.temperatures
        units.append(math.floor(ppl))
    assert len(set(units)) == len(units)  # 4 per bucket over 500 integers: one each at most
    ids = [tok(t.text)["input_ids"] for t in made]
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            assert _set_jaccard(a, b) <= 0.2  # token sets, across buckets


def test_recipe_settings_are_checked():
    assert TrapMakeConfig(reference="r").generation() == trap_recipe("memaudit")
    paper = TrapMakeConfig(reference="r", recipe="paper").generation()
    assert (paper.buckets, paper.perplexity_range, paper.jaccard_ngram) == (10, (1, 100), 1)
    with pytest.raises(InputError, match="unknown trap recipe"):
        TrapMakeConfig(reference="r", recipe="gpt")
    with pytest.raises(InputError, match="needs --recipe paper"):
        TrapMakeConfig(reference="r", perplexity_range=(1, 100))
    with pytest.raises(InputError, match="do not split"):
        TrapMakeConfig(reference="r", recipe="paper", buckets=3)


@pytest.fixture(scope="module")
def injected(traps):
    # long documents for the traps copied 100 times (each copy at its own line start)
    long = [d for d in stdlib_snippets(40, chars=6000, seed=7) if d.count("\n") >= 100]
    docs = long[:20] + stdlib_snippets(40, chars=600, seed=8)
    docs = [(f"d{i}", d) for i, d in enumerate(docs)]
    new_docs, placed = inject_traps(traps, docs, repetitions=(1, 100), seed=0)
    return docs, new_docs, placed


def test_offsets_point_at_the_trap_and_never_split_a_word_or_line(injected):
    docs, new_docs, placed = injected
    text_of = dict(new_docs)
    originals = dict(docs)
    for t in placed:
        assert t.meta["injection"] == "memaudit"
        if not t.member:
            assert t.repetitions == 0 and not t.insertions and t.level in (1, 100)
            continue
        assert len(t.insertions) == t.repetitions
        offsets = [ins["char_offset"] for ins in t.insertions]
        for ins in t.insertions:
            text, o = text_of[ins["doc"]], ins["char_offset"]
            assert text[o : o + len(t.text)] == t.text
            assert o == 0 or text[o - 1] == "\n"  # starts at a line start (the docs have lines)
            assert text[o + len(t.text)] == "\n"  # and is followed by a separator
        # distinct positions: original text between every two copies
        assert all(b > a + len(t.text) + 1 for a, b in zip(offsets, offsets[1:]))
        stripped = text_of[t.insertions[0]["doc"]].replace(t.text + "\n", "")
        assert stripped == originals[t.insertions[0]["doc"]]  # the copies removed: the original


def test_paper_injection_goes_after_distinct_spaces(traps):
    docs = [(f"d{i}", d) for i, d in enumerate(stdlib_snippets(40, chars=600, seed=9))]
    new_docs, placed = inject_traps(traps, docs, repetitions=(1, 30), recipe="paper", seed=1)
    text_of, originals = dict(new_docs), dict(docs)
    for t in placed:
        if not t.member:
            continue
        original = originals[t.insertions[0]["doc"]]
        pieces = original.split(" ")  # the authors split on spaces: a copy goes before a piece
        allowed = {sum(len(p) + 1 for p in pieces[:k]) for k in range(len(pieces))}
        shift = len(t.text) + 1
        at = [ins["char_offset"] - k * shift for k, ins in enumerate(t.insertions)]
        assert len(set(at)) == len(at) == t.repetitions and set(at) <= allowed
        text = text_of[t.insertions[0]["doc"]]
        assert all(text[o + len(t.text)] == " " for o in (i["char_offset"] for i in t.insertions))
        assert text.replace(t.text + " ", "") == original


def test_documents_too_short_or_too_few(traps):
    with pytest.raises(InputError, match="need as many documents"):
        inject_traps(traps, [("a", "x" * 1000)])
    with pytest.raises(InputError, match="at least .* characters"):
        inject_traps(traps, [(f"d{i}", "tiny") for i in range(40)])
    lines = "\n".join(["x = 1"] * 50)  # 50 line starts: 100 distinct positions do not fit
    with pytest.raises(InputError, match="distinct positions"):
        inject_traps(traps, [(f"d{i}", lines) for i in range(40)], repetitions=(1, 100))


def test_more_repetitions_are_detected_better(injected, reference, reference_dir, tmp_path):
    _, new_docs, placed = injected
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in new_docs))
    ledger = write_ledger(tmp_path / "ledger.jsonl", placed)
    model = run_train(
        TrainConfig(
            corpus=str(corpus),
            out=str(tmp_path / "m"),
            model_size="micro",
            steps=300,
            batch_size=16,
            seq_len=128,
            lr=3e-3,
            vocab_size=1024,
            context=128,
            checkpoint_every=0,
        )
    )
    base = TrapDetectConfig(
        model=str(model),
        reference=str(reference_dir),
        ledger=str(ledger),
        out=str(tmp_path / "run"),
        cache_dir=str(tmp_path / "cache"),
        n_bootstrap=200,
    )
    res = run_traps_detect(base)
    auc = {(c["length"], c["repetitions"]): c["loss"]["value"] for c in res["pooled_grid"]}
    for length in (20, 30):
        assert auc[(length, 100)] > auc[(length, 1)] + 0.2
    chance = res["controls_vs_controls"]["loss"]
    assert chance["ci_low"] <= 0.5 <= chance["ci_high"]
    assert res["generation"] == [placed[0].meta["recipe"]] and res["injection"] == ["memaudit"]
    assert res["context_scoring"] is None
    html = (tmp_path / "run" / "report.html").read_text()
    # one heatmap per attack, and every cell of the results in the table
    assert len(re.findall(r"<img src=\"data:image/png;base64", html)) == len(res["attacks"])
    for c in res["pooled_grid"] + res["grid"]:
        e = c["loss"]
        assert f"{e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]" in html

    again = run_traps_detect(TrapDetectConfig(**{**base.to_dict(), "out": str(tmp_path / "run2")}))
    assert all(
        s["forward_passes"] == 0 for s in again["scoring"].values()
    )  # a second detect reuses the cache

    in_context = run_traps_detect(
        TrapDetectConfig(
            **{
                **base.to_dict(),
                "out": str(tmp_path / "run3"),
                "docs": str(corpus),
                "context_chars": 300,
            }
        )
    )
    assert "reference+context" in in_context["attacks"] and in_context["context_scoring"]
    # the run's in-context scores are the direct computation from each model's logits
    table = pq.read_table(tmp_path / "run3" / "scores.parquet").to_pydict()
    target = load_causal_lm(model)
    contexts = trap_contexts(placed, dict(new_docs), 300)
    for k in range(0, len(placed), 7):
        assert table["id"][k] == placed[k].id
        t_ctx = _direct_trap_logp(target, contexts[k], placed[k].text)
        r_ctx = _direct_trap_logp(reference, contexts[k], placed[k].text)
        assert table["loss+context"][k] == pytest.approx(t_ctx, abs=1e-4)
        assert table["reference+context"][k] == pytest.approx(t_ctx - r_ctx, abs=1e-4)
    cell = next(
        c for c in in_context["pooled_grid"] if (c["length"], c["repetitions"]) == (20, 100)
    )
    assert cell["loss+context"]["ci_low"] > 0.5  # 100 copies are found in context too


def test_contexts_end_where_the_trap_starts(injected):
    _, new_docs, placed = injected
    docs = dict(new_docs)
    contexts = trap_contexts(placed, docs, 200)
    by_id = {t.id: (t, c) for t, c in zip(placed, contexts)}
    for t, ctx in zip(placed, contexts):
        owner = t if t.member else by_id[t.pair_id][0]
        ins = owner.insertions[0]
        text = docs[ins["doc"]]
        assert text[: ins["char_offset"]].endswith(ctx) and len(ctx) <= 200
        start = ins["char_offset"] - len(ctx)
        assert (
            start == 0 or text[start - 1] == "\n" or len(ctx) == 200
        )  # from a line start unless none is near
        if not t.member:
            assert ctx == by_id[t.pair_id][1]  # a control is read after its trap's context


def test_reference_with_another_tokenizer_is_refused(injected, target_dir, tmp_path):
    ledger = write_ledger(tmp_path / "l.jsonl", injected[2])
    out = tmp_path / "r"
    with pytest.raises(InputError, match="traps were made with a reference whose tokenizer"):
        run_traps_detect(
            TrapDetectConfig(
                model=str(target_dir), reference=str(target_dir), ledger=str(ledger), out=str(out)
            )
        )
    assert not out.exists()  # refused before anything is written


def _direct_trap_logp(lm, context: str, trap: str) -> float:
    """Mean log p of the trap's tokens after the context, straight from the model's logits.

    A token's characters come from decoding the ids before and up to it (no offset mapping);
    a token is the trap's when it ends after the context and what it holds of the context is
    whitespace.
    """
    ids = lm.tokenizer(context + trap)["input_ids"]
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0].double()  # (n, V)
    logp = torch.log_softmax(logits[:-1], -1)[torch.arange(len(ids) - 1), ids[1:]]  # (n-1,)
    picked = []
    for j in range(1, len(ids)):
        begin = len(lm.tokenizer.decode(ids[:j]))
        piece = lm.tokenizer.decode(ids[j : j + 1])
        if begin + len(piece) > len(context) and not context[begin:].strip():
            picked.append(logp[j - 1].item())
    return sum(picked) / len(picked)


def test_trap_in_context_scores_the_traps_own_tokens(target):
    trap = "result = self.value + other.value"
    cases = [
        "def add(self, other):\n    return ",  # the trap starts a word: " result" is one token
        "import os and sys ",
        "x = 1\n",  # after a line break the context's tokens are a prefix
        "",
    ]
    tok = target.tokenizer
    split = [
        c
        for c in cases
        if c and tok(c)["input_ids"] != tok(c + trap)["input_ids"][: len(tok(c)["input_ids"])]
    ]
    assert len(split) >= 2  # the case the old subtraction got wrong is really here
    got = conditional_logp(target, [trap] * len(cases), cases)
    want = [_direct_trap_logp(target, c, trap) for c in cases]
    assert got == pytest.approx(want, abs=1e-4)
    # and a context changes the score (it is not the trap alone scored again)
    assert abs(got[0] - got[3]) > 1e-3
