"""Copyright traps end to end: make from a reference, inject, train, detect."""

import json
import re

import pytest
import torch

from memaudit.errors import InputError
from memaudit.io.corpus import stdlib_snippets
from memaudit.lab.canaries import read_ledger, write_ledger
from memaudit.lab.train import TrainConfig, run_train
from memaudit.mia.traps import (
    conditional_logp,
    inject_traps,
    jaccard,
    make_traps,
    run_traps_detect,
    trap_contexts,
)
from memaudit.models import load_causal_lm


@pytest.fixture(scope="module")
def reference(reference_dir):
    return load_causal_lm(reference_dir)


@pytest.fixture(scope="module")
def traps(reference):
    return make_traps(
        reference, lengths=(20, 30), per_bucket=8, n_buckets=2, pool_factor=60, seed=0
    )


def test_traps_are_distinct_bucketed_and_paired(traps, reference):
    assert len(traps) == 64 and sum(t.member for t in traps) == 32
    for t in traps:
        ids = reference.tokenizer(t.text, verbose=False)["input_ids"]
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
    same_length = [t for t in traps if t.meta["length"] == 20]
    tok = reference.tokenizer
    for i, a in enumerate(same_length):
        for b in same_length[i + 1 :]:
            if a.meta["bucket"] == b.meta["bucket"]:
                assert jaccard(tok(a.text)["input_ids"], tok(b.text)["input_ids"]) <= 0.2


@pytest.fixture(scope="module")
def injected(traps):
    docs = [(f"d{i}", d) for i, d in enumerate(stdlib_snippets(200, chars=600, seed=7))]
    new_docs, placed = inject_traps(traps, docs, repetitions=(1, 100), seed=0)
    return docs, new_docs, placed


def test_offsets_point_at_the_trap_and_never_split_a_word_or_line(injected):
    docs, new_docs, placed = injected
    text_of = dict(new_docs)
    originals = dict(docs)
    for t in placed:
        if not t.member:
            assert t.repetitions == 0 and not t.insertions and t.level in (1, 100)
            continue
        assert len(t.insertions) == t.repetitions
        for ins in t.insertions:
            text, o = text_of[ins["doc"]], ins["char_offset"]
            assert text[o : o + len(t.text)] == t.text
            assert o == 0 or text[o - 1] in "\n "  # starts at a line or word boundary
            assert text[o + len(t.text)] in "\n "  # and is followed by a separator
        stripped = (
            text_of[t.insertions[0]["doc"]].replace(t.text + "\n", "").replace(t.text + " ", "")
        )
        assert (
            stripped == originals[t.insertions[0]["doc"]]
        )  # removing the copies gives the original back


def test_documents_too_short_or_too_few(traps):
    with pytest.raises(InputError, match="need as many documents"):
        inject_traps(traps, [("a", "x" * 1000)])
    with pytest.raises(InputError, match="documents shorter than a trap"):
        inject_traps(traps, [(f"d{i}", "tiny") for i in range(40)])


def test_more_repetitions_are_detected_better(injected, reference_dir, tmp_path):
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
    res = run_traps_detect(
        model=str(model),
        reference=str(reference_dir),
        ledger=str(ledger),
        out=str(tmp_path / "run"),
        cache_root=tmp_path / "cache",
        n_bootstrap=200,
    )
    auc = {(c["length"], c["repetitions"]): c["loss"]["value"] for c in res["pooled_grid"]}
    for length in (20, 30):
        assert auc[(length, 100)] > auc[(length, 1)] + 0.2
    chance = res["controls_vs_controls"]["loss"]
    assert chance["ci_low"] <= 0.5 <= chance["ci_high"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Detection grid" in html and re.search(r"data:image/png;base64", html)

    again = run_traps_detect(
        model=str(model),
        reference=str(reference_dir),
        ledger=str(ledger),
        out=str(tmp_path / "run2"),
        cache_root=tmp_path / "cache",
        n_bootstrap=200,
    )
    assert all(
        s["forward_passes"] == 0 for s in again["scoring"].values()
    )  # a second detect reuses the cache

    in_context = run_traps_detect(
        model=str(model),
        reference=str(reference_dir),
        ledger=str(ledger),
        out=str(tmp_path / "run3"),
        cache_root=tmp_path / "cache",
        n_bootstrap=200,
        docs=str(corpus),
        context_chars=300,
    )
    auc = {
        (c["length"], c["repetitions"]): c["loss+context"]["value"]
        for c in in_context["pooled_grid"]
    }
    assert "reference+context" in in_context["attacks"] and auc[(20, 100)] > auc[(20, 1)]


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
    with pytest.raises(InputError, match="traps were made with a reference whose tokenizer"):
        run_traps_detect(
            model=str(target_dir),
            reference=str(target_dir),
            ledger=str(ledger),
            out=str(tmp_path / "r"),
        )
    assert read_ledger(ledger)


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
