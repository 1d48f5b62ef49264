"""The memorization lab: canaries, insertion, the resumable trainer, generation and extraction."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import write_jsonl
from memaudit.errors import InputError
from memaudit.lab.canaries import (
    TEMPLATES,
    candidates,
    make_canaries,
    read_ledger,
    write_ledger,
)
from memaudit.lab.evaluate import exposure, prefix_cut, prompt_split
from memaudit.lab.insertion import Schedule, canary_tokens, plan_insertions
from memaudit.lab.lm import EOS
from memaudit.lab.train import TrainConfig, run_train
from memaudit.lab.verbatim import compare, extraction_strength
from memaudit.models.generation import greedy_generate
from memaudit.scoring.engine import score_texts


class Killed(Exception):
    """A training run killed from its progress callback."""


def killed_at(step):
    """A progress callback that kills the run when it reports ``step``."""

    def progress(stage, done, total, note=""):
        if done == step:
            raise Killed

    return progress


def test_canaries_have_unique_prefixes_and_never_inserted_twins(tmp_path):
    made = make_canaries(repetitions=(1, 4, 32), per_level=4, seed=3)
    assert len({c.prefix for c in made}) == len(made)
    for c in made:
        assert c.text.startswith(c.prefix) and c.secret in c.text
        twin = next(t for t in made if t.id == c.pair_id)
        assert twin.template == c.template and twin.level == c.level and twin.member != c.member
        assert (c.repetitions == c.level) if c.member else c.repetitions == 0
    assert read_ledger(write_ledger(tmp_path / "l.jsonl", made)) == made
    assert make_canaries(repetitions=(1, 4, 32), per_level=4, seed=3) == made  # seeded
    pool = candidates(made[0], 20)
    assert (
        len(set(pool)) == 20
        and made[0].text not in pool
        and all(p.startswith(made[0].prefix) for p in pool)
    )


def test_bad_ledgers_name_file_and_line(tmp_path):
    good = make_canaries(repetitions=(1,), per_level=1)[0].to_json()
    for lines, message in (
        ([good, "{oops"], "malformed JSON"),
        ([good, '{"id": "x"}'], "ledger entry lacks"),
    ):
        p = tmp_path / "bad.jsonl"
        p.write_text("\n".join(lines) + "\n")
        with pytest.raises(InputError, match=message) as e:
            read_ledger(p)
        assert e.value.line == 2
    with pytest.raises(InputError, match="unknown position policy"):
        make_canaries(policy="centre")


def test_insertions_land_where_the_ledger_says(tokenizer):
    made = make_canaries(repetitions=(3, 7), per_level=2, policy="early", seed=1)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    tokens = canary_tokens(tokenizer, made, eos)
    plan = plan_insertions(made, tokens, steps=30, batch_size=4, seq_len=64, seed=0)
    by_id = {}
    for ins in plan:
        by_id.setdefault(ins.canary, []).append(ins)
    assert {c.id: len(by_id.get(c.id, [])) for c in made} == {c.id: c.repetitions for c in made}
    assert len({(i.step, i.row, i.offset) for i in plan}) == len(plan)
    assert all(i.step < 10 for i in plan)  # "early": the first third of 30 steps
    schedule = Schedule(
        np.arange(5000) % 700, steps=30, batch_size=4, seq_len=64, insertions=plan, tokens=tokens
    )
    for ins in plan:
        row = schedule.batch(ins.step)[ins.row].numpy()
        body = tokens[ins.canary][1:-1]
        np.testing.assert_array_equal(row[ins.offset : ins.offset + len(body)], body)
        assert ins.stream_offset == (ins.step * 4 + ins.row) * 64 + ins.offset


def test_canary_that_does_not_tokenize_is_refused(tokenizer):
    c = make_canaries(repetitions=(1,), per_level=1)[0]

    with pytest.raises(InputError, match="does not tokenize cleanly"):
        canary_tokens(tokenizer, [replace(c, text="x")], 0)


def test_killed_training_resumes_to_the_same_weights(tmp_path):
    ledger = write_ledger(tmp_path / "l.jsonl", make_canaries(repetitions=(2, 5), per_level=2))
    common = dict(
        corpus="stdlib",
        ledger=str(ledger),
        model_size="micro",
        steps=12,
        batch_size=4,
        seq_len=64,
        corpus_chars=20_000,
        vocab_size=512,
        context=64,
        checkpoint_every=4,
    )
    straight = run_train(TrainConfig(out=str(tmp_path / "a"), **common))

    with pytest.raises(Killed):
        run_train(TrainConfig(out=str(tmp_path / "b"), **common), progress=killed_at(7))
    assert not (tmp_path / "b" / "memaudit_train.json").exists()
    assert [p.name for p in (tmp_path / "b").glob("checkpoint-*")] == ["checkpoint-0000004"]
    notes = []
    resumed = run_train(
        TrainConfig(out=str(tmp_path / "b"), **common),
        progress=lambda stage, done, total, note="": notes.append(note),
    )
    assert notes[0] == "resumed from the checkpoint of step 4"  # a resumed run says so
    assert json.loads((resumed / "memaudit_train.json").read_text())["resumed_from_step"] == 4

    from safetensors.torch import load_file

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ledger_out = read_ledger(resumed / "ledger.jsonl")
    assert all(len(c.insertions) == c.repetitions for c in ledger_out)

    with pytest.raises(InputError, match="other settings or data"):
        run_train(TrainConfig(out=str(tmp_path / "b"), **{**common, "steps": 13}))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"steps": 0}, "steps must be >= 1"),
        ({"model_size": "huge"}, "unknown model size"),
        ({"seq_len": 512}, "exceeds the model context"),
    ],
)
def test_bad_train_settings(overrides, message, tmp_path):
    with pytest.raises(InputError, match=message):
        TrainConfig(corpus="stdlib", out=str(tmp_path), **overrides)


def test_empty_corpus_is_refused(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("   \n")
    config = TrainConfig(corpus=str(tmp_path / "docs"), out=str(tmp_path / "m"), steps=1)
    with pytest.raises(InputError, match="a.txt: empty text"):
        run_train(config)
    with pytest.raises(InputError, match="holds no text"):
        run_train(replace(config, skip_invalid=True))


def _tiny_train(tmp_path, corpus, **overrides):
    settings = dict(
        corpus=str(corpus),
        out=str(tmp_path / "m"),
        model_size="micro",
        steps=2,
        batch_size=2,
        seq_len=32,
        vocab_size=300,
        context=32,
        checkpoint_every=1,
    )
    return TrainConfig(**{**settings, **overrides})


def test_train_identity_is_the_corpus_content_not_its_path(tmp_path, snippets):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in snippets["members"][:40]])
    first = run_train(_tiny_train(tmp_path, corpus))
    record = json.loads((first / "memaudit_train.json").read_text())
    assert record["identity_inputs"]["corpus"] == record["corpus"]["digest"]
    # the same documents under another name, on another device setting: the finished run
    moved = tmp_path / "moved.jsonl"
    moved.write_text(corpus.read_text())
    same = _tiny_train(tmp_path, moved, device="cpu", checkpoint_every=0)
    assert run_train(same) == first
    assert json.loads((first / "memaudit_train.json").read_text()) == record  # not retrained
    # one document edited: never the old model as if finished
    corpus.write_text(corpus.read_text().replace("def", "fed", 1))
    with pytest.raises(InputError, match="other settings or data"):
        run_train(_tiny_train(tmp_path, corpus))
    again = run_train(_tiny_train(tmp_path, corpus, overwrite=True))
    changed = json.loads((again / "memaudit_train.json").read_text())
    assert changed["identity"] != record["identity"]
    assert changed["corpus"]["digest"] != record["corpus"]["digest"]


def test_a_tokenizer_left_by_a_killed_run_is_reused_only_if_it_matches(tmp_path, snippets):
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in snippets["members"][:40]])

    with pytest.raises(Killed):  # before its first checkpoint: only the tokenizer is left
        run_train(_tiny_train(tmp_path, corpus, vocab_size=300), progress=killed_at(1))
    assert (tmp_path / "m" / "tokenizer.json").is_file()
    assert not list((tmp_path / "m").glob("checkpoint-*"))
    model = run_train(_tiny_train(tmp_path, corpus, vocab_size=400))
    from transformers import AutoTokenizer

    vocab = json.loads((model / "tokenizer.json").read_text())["model"]["vocab"]
    assert 300 < len(vocab) <= 400  # retrained for the new vocabulary size, not the left one
    assert len(AutoTokenizer.from_pretrained(model)) == len(vocab)


def test_train_corpus_with_bad_records_stops_or_lists_them(tmp_path, snippets):
    rows = [{"text": t} for t in snippets["members"][:40]] + ["{oops", "[1]", '{"text": ""}']
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    with pytest.raises(InputError, match="malformed JSON") as e:
        run_train(_tiny_train(tmp_path, corpus))
    assert e.value.line == 41
    model = run_train(_tiny_train(tmp_path, corpus, skip_invalid=True))
    skipped = json.loads((model / "memaudit_train.json").read_text())["corpus"]["skipped"]
    assert [s["line"] for s in skipped] == [41, 42, 43]


def test_continued_training_with_dropout_is_seeded_and_resumes_exactly(
    tmp_path, target_dir, snippets
):
    import shutil

    from safetensors.torch import load_file

    base = tmp_path / "base"
    shutil.copytree(target_dir, base)
    config = json.loads((base / "config.json").read_text())
    config.update(resid_pdrop=0.2, embd_pdrop=0.2, attn_pdrop=0.2)
    (base / "config.json").write_text(json.dumps(config))
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in snippets["members"][:30]])

    def train(out, **extra):
        cfg = _tiny_train(tmp_path, corpus, init_from=str(base), out=str(tmp_path / out))
        return run_train(replace(cfg, steps=4, checkpoint_every=2), **extra)

    a = load_file(train("a") / "model.safetensors")
    b = load_file(train("b") / "model.safetensors")
    with pytest.raises(Killed):
        train("c", progress=killed_at(3))
    c = load_file(train("c") / "model.safetensors")
    start = load_file(base / "model.safetensors")
    assert any(not torch.equal(a[k], start[k]) for k in a)  # it trained
    for other in (b, c):  # the same dropout masks: the same weights, resumed or not
        assert all(torch.equal(a[k], other[k]) for k in a)


@pytest.mark.parametrize(
    "overrides, message",
    [({"lr": -1.0}, "lr must be a positive"), ({"lr": float("nan")}, "lr must be a positive")],
)
def test_bad_optimiser_settings_are_refused_before_any_work(overrides, message, tmp_path):
    with pytest.raises(InputError, match=message):
        TrainConfig(corpus="stdlib", out=str(tmp_path), **overrides)


def test_text_seen_50_times_is_extracted_unseen_is_not(repeated_model, snippets):
    model, seen = repeated_model
    unseen = snippets["nonmembers2"][:5]
    ids = model.encode([seen, *unseen])
    generated = greedy_generate(model, [t[:8] for t in ids], 16)
    results = [compare(g, t[8:24]) for g, t in zip(generated, ids)]
    assert results[0].exact
    assert not any(r.exact for r in results[1:]) and max(r.token_match for r in results[1:]) < 0.5


def naive_greedy(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            logits = model.model(input_ids=torch.tensor([ids])).logits  # no cache, no batch
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt) :]


def test_batched_cached_generation_equals_a_plain_loop(repeated_model, snippets):
    model, seen = repeated_model
    texts = [seen, *snippets["members"][1:6], *snippets["nonmembers2"][:6]]
    prompts = [
        t[: 3 + i] for i, t in enumerate(model.encode(texts))
    ]  # lengths differ: left padding
    assert greedy_generate(model, prompts, 12, batch_size=5) == [
        naive_greedy(model, p, 12) for p in prompts
    ]


def test_extraction_strength_equals_brute_force(repeated_model, snippets):
    model, seen = repeated_model
    texts = [seen, snippets["nonmembers2"][0][:60]]
    scores, _ = score_texts(model, texts)
    for text, strength in zip(texts, extraction_strength(scores)):
        ids = model.encode([text])[0]
        x, y = ids[:1], ids[1:]  # the paper's 1 - k/|y|, x the first token
        k = next(
            (k for k in range(len(y)) if naive_greedy(model, x + y[:k], len(y) - k) == y[k:]),
            len(y),
        )
        assert strength == pytest.approx(1 - k / len(y))
    assert extraction_strength(scores)[0] > 0.5


def test_prompt_split_cuts_at_the_prefix_and_keeps_the_document_break(target_dir):
    from memaudit.models.hf import LoadOptions, load_causal_lm

    plain = load_causal_lm(target_dir)
    with_break = load_causal_lm(target_dir, LoadOptions(bos="always"))
    eos = plain.tokenizer.convert_tokens_to_ids(EOS)
    for c in make_canaries(repetitions=(1,), per_level=4):
        prompt, rest = prompt_split(plain, c)
        assert plain.tokenizer.decode(prompt + rest) == c.text
        assert c.prefix.startswith(plain.tokenizer.decode(prompt))
        assert c.secret in plain.tokenizer.decode(rest)
        # as training wrote each insertion: after a document break, the same cut
        assert prompt_split(with_break, c) == ([eos, *prompt], rest)
        ids = prompt + rest  # and prefix_cut alone, as unlearn-eval calls it on encoded ids
        assert prefix_cut(plain.tokenizer, [eos, *ids], c.prefix) == 1 + len(prompt)


def test_exposure_of_a_memorized_secret_is_high():
    rng = np.random.default_rng(0)
    cands = rng.normal(50, 5, 500)
    high, rank_high = exposure(10.0, cands, TEMPLATES["api_key"].bits)
    low, rank_low = exposure(50.0, cands, TEMPLATES["api_key"].bits)
    assert rank_high == 1 and high > 20 and 0.5 < low < 1.5 and 200 < rank_low < 300
    assert exposure(-1e9, cands, 32.0)[0] == 32.0  # capped at log2 |R|


def test_extract_command_groups_and_reports(repeated_model, snippets, tmp_path):
    from typer.testing import CliRunner

    from memaudit.cli.app import app

    model, seen = repeated_model
    rows = [{"id": "seen", "text": seen, "repetitions": 50}] + [
        {"id": f"u{i}", "text": t, "repetitions": 0}
        for i, t in enumerate(snippets["nonmembers2"][:6])
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "extract",
            "--model",
            model.name,
            "--data",
            str(data),
            "-k",
            "8",
            "-m",
            "16",
            "--group-by",
            "repetitions",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (
        res["rates"]["by_group"]["50"]["exact"]["value"] == 1.0
        and res["rates"]["by_group"]["0"]["exact"]["value"] == 0.0
    )
    assert (
        res["rates"]["overall"]["n"] == 7
        and "<mark>" in (tmp_path / "run" / "report.html").read_text()
    )

    r = runner.invoke(
        app,
        [
            "extract",
            "--model",
            model.name,
            "--data",
            str(data),
            "-k",
            "100",
            "-m",
            "20",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    n_seen = len(model.encode([seen])[0])
    assert (
        r.exit_code == 2
        and r.stderr.startswith("error: ")
        and f"d.jsonl:1: text has {n_seen} tokens; prefix + suffix = 120 needed" in r.stderr
    )
    r = runner.invoke(
        app, ["extract", "--model", model.name, "--data", str(data), "-k", "100", "-m", "100"]
    )
    assert r.exit_code == 2 and "exceeds the model's context of 128" in r.stderr
    assert not (tmp_path / "x" / "results.json").exists()


def test_canaries_make_and_train_commands(tmp_path):
    from typer.testing import CliRunner

    from memaudit.cli.app import app

    runner = CliRunner()
    ledger = tmp_path / "c.jsonl"
    r = runner.invoke(
        app, ["canaries", "make", "--out", str(ledger), "--repetitions", "1,3", "--per-level", "2"]
    )
    assert r.exit_code == 0 and "4 canaries + 4 twins" in r.stdout
    r = runner.invoke(
        app,
        [
            "train",
            "--ledger",
            str(ledger),
            "--out",
            str(tmp_path / "m"),
            "--model-size",
            "micro",
            "--steps",
            "10",
            "--batch-size",
            "4",
            "--seq-len",
            "64",
            "--corpus-chars",
            "20000",
            "--vocab-size",
            "512",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m" / "model.safetensors").is_file() and len(
        read_ledger(tmp_path / "m" / "ledger.jsonl")
    ) == 8
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "z"), "--steps", "0"])
    assert r.exit_code == 2 and "steps must be >= 1" in r.stderr
    r = runner.invoke(app, ["canaries", "make", "--repetitions", "1,x"])
    assert r.exit_code == 2 and "comma list of integers" in r.stderr


def test_init_from_continues_an_existing_model(tmp_path, snippets):
    from safetensors.torch import load_file

    ledger = write_ledger(tmp_path / "l.jsonl", make_canaries(repetitions=(1,), per_level=1))
    common = dict(
        model_size="micro", batch_size=4, seq_len=64, vocab_size=512, context=64, checkpoint_every=0
    )
    first = run_train(
        TrainConfig(
            corpus="stdlib",
            out=str(tmp_path / "a"),
            ledger=str(ledger),
            steps=4,
            corpus_chars=20_000,
            **common,
        )
    )
    docs = tmp_path / "new.txt"
    docs.write_text("\n".join(snippets["nonmembers2"][:40]))
    second = run_train(
        TrainConfig(
            corpus=str(docs), out=str(tmp_path / "b"), init_from=str(first), steps=3, **common
        )
    )
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)
