"""Model editing: the closed forms against direct solves, the edit commands on a small fact
model trained here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memaudit.editing.solve import emmet_delta, memit_delta, rome_delta
from memaudit.errors import InputError


def _problem(seed: int, d_out=5, d_in=7, n0=40, e=3):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    K0 = torch.randn(d_in, n0, generator=g, dtype=torch.float64)
    K = torch.randn(d_in, e, generator=g, dtype=torch.float64)
    V = torch.randn(d_out, e, generator=g, dtype=torch.float64)
    return W, K0, K, V


def test_rome_writes_its_value_and_leaves_c_orthogonal_keys_alone():
    W, K0, K, V = _problem(0)
    C = K0 @ K0.T
    k, v = K[:, 0], V[:, 0]
    D = rome_delta(W, C, k, v)
    assert torch.allclose((W + D) @ k, v, atol=1e-5)
    # keys j with j^T C^-1 k = 0: project random keys off the C^-1 k direction
    u = torch.linalg.solve(C, k)
    J = torch.randn(7, 4, dtype=torch.float64)
    J = J - torch.outer(u, u @ J) / (u @ u)
    assert torch.allclose((W + D) @ J, W @ J, atol=1e-5)
    assert torch.linalg.matrix_rank(D) == 1


def test_memit_equals_a_direct_least_squares_solve():
    W, K0, K, V = _problem(1)
    lam = 3.0
    D = memit_delta(W, lam * (K0 @ K0.T), K, V)
    # min_D lam ||D K0||^2 + ||(W + D) K - V||^2, rows of D as one stacked least squares
    A = torch.cat([np.sqrt(lam) * K0.T, K.T])  # (n0 + E, d_in)
    B = torch.cat([torch.zeros(K0.shape[1], W.shape[0], dtype=W.dtype), (V - W @ K).T])
    direct = torch.linalg.lstsq(A, B).solution.T
    assert torch.allclose(D, direct, atol=1e-8)


def test_emmet_equals_a_direct_constrained_solve():
    W, K0, K, V = _problem(2)
    C = K0 @ K0.T
    D = emmet_delta(W, C, K, V)
    # min tr(D C D^T) s.t. D K = V - W K: the KKT system [[2C, K], [K^T, 0]] per row of D
    d_in, e = K.shape
    kkt = torch.zeros(d_in + e, d_in + e, dtype=W.dtype)
    kkt[:d_in, :d_in], kkt[:d_in, d_in:], kkt[d_in:, :d_in] = 2 * C, K, K.T
    rhs = torch.cat([torch.zeros(d_in, W.shape[0], dtype=W.dtype), (V - W @ K).T])
    direct = torch.linalg.solve(kkt, rhs)[:d_in].T
    assert torch.allclose(D, direct, atol=1e-8)
    assert torch.allclose((W + D) @ K, V, atol=1e-8)
    # one edit: EMMET is ROME
    assert torch.allclose(emmet_delta(W, C, K[:, :1], V[:, :1]), rome_delta(W, C, K[:, 0], V[:, 0]))


def test_the_solvers_refuse_shapes_that_do_not_fit():
    W, K0, K, V = _problem(3)
    with pytest.raises(InputError, match="covariance"):
        memit_delta(W, torch.eye(3, dtype=W.dtype), K, V)
    with pytest.raises(InputError, match="edit values"):
        emmet_delta(W, K0 @ K0.T, K, V[:, :2])
    with pytest.raises(InputError, match="ridge"):
        emmet_delta(W, K0 @ K0.T, K, V, ridge=-1)


# --- the commands, on the suite's micro model (a 2-layer GPT-2 trained on stdlib source) --------


def _invoke(*args):
    from typer.testing import CliRunner

    from memaudit.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


EDIT = {
    "id": "e1",
    "subject": "self",
    "prompt": "def __init__({},",
    "target_new": " secret",
    "target_true": " name",
    "paraphrases": ["    {}."],
    "neighbourhood": ["def run(x,"],
}


@pytest.fixture(scope="session")
def edit_inputs(target_dir, snippets, tmp_path_factory):
    import json

    root = tmp_path_factory.mktemp("edit")
    (root / "edits.jsonl").write_text(json.dumps(EDIT) + "\n")
    (root / "controls.jsonl").write_text(
        json.dumps({**EDIT, "id": "c1", "subject": "cls", "prompt": "def make({},"}) + "\n"
    )
    (root / "corpus.txt").write_text("\n".join(snippets["members"][:40]))
    return root


def _edit(target_dir, root, out, *extra):
    return _invoke(
        "edit", "--model", target_dir, "--edits", root / "edits.jsonl",
        "--covariance-corpus", root / "corpus.txt", "--covariance-tokens", 2000,
        "--cache-dir", root / "cache", "--out", out, *extra,
    )  # fmt: skip


def test_edit_writes_its_target_leaves_the_original_and_reuses_its_statistics(
    target_dir, edit_inputs
):
    import json

    from memaudit.editing.compute import block_outputs, target_deltas
    from memaudit.editing.requests import encode
    from memaudit.models.hf import load_causal_lm

    before = load_causal_lm(target_dir).fingerprint
    out1, out2 = edit_inputs / "rome", edit_inputs / "rome-again"
    r = _edit(target_dir, edit_inputs, out1, "--method", "rome", "--layers", 0)
    assert r.exit_code == 0, r.output
    rec1 = json.loads((out1 / "memaudit_edit.json").read_text())
    assert rec1["covariance"]["layers"][0]["forward_passes"] > 0
    r = _edit(target_dir, edit_inputs, out2, "--method", "rome", "--layers", 0)
    assert r.exit_code == 0, r.output
    rec2 = json.loads((out2 / "memaudit_edit.json").read_text())
    assert rec2["covariance"]["layers"][0]["forward_passes"] == 0  # read from the cache
    assert load_causal_lm(target_dir).fingerprint == before == rec1["original"]["fingerprint"]
    # the edited block writes exactly what the target search found: W' k* = W k* + delta
    original, edited = load_causal_lm(target_dir), load_causal_lm(out1)
    e = encode(original.tokenizer, "def __init__(self,", " secret", "self")
    found = target_deltas(original.model, [e], 0)
    want = block_outputs(original.model, [e], 0) + found.delta
    torch.testing.assert_close(block_outputs(edited.model, [e], 0), want, atol=1e-4, rtol=1e-4)


def test_edit_eval_measures_the_edited_model(target_dir, edit_inputs):
    import json

    out = edit_inputs / "memit"
    assert _edit(target_dir, edit_inputs, out, "--method", "memit").exit_code == 0
    r = _invoke(
        "edit-eval", "--original", target_dir, "--edited", out, "--edits",
        edit_inputs / "edits.jsonl", "--controls", edit_inputs / "controls.jsonl",
        "--general", edit_inputs / "corpus.txt", "--general-texts", 8, "--n-bootstrap", 20,
        "--out", edit_inputs / "eval",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    res = json.loads((edit_inputs / "eval" / "results.json").read_text())
    m = res["edited"][str(out)]
    assert m["efficacy"]["n"] == 1 and m["specificity"]["n"] == 1
    assert set(res["membership"]) == {"original", str(out)}
    assert (edit_inputs / "eval" / "report.html").is_file()


@pytest.mark.parametrize(
    "lines, extra, message",
    [
        ([{**EDIT, "prompt": "def run(x,"}], (), "is not in the prompt"),
        ([], (), "no edits in the file"),
        ([EDIT], ("--layers", "5"), "does not exist"),
        ([EDIT], ("--layers", "1"), "is the last"),
        ([EDIT], ("--method", "romee"), "did you mean 'rome'"),
        ([EDIT, EDIT], (), "edits.jsonl:2: edit id 'e1' was already used on line 1"),
        ([EDIT], ("--covariance-tokens", "50"), "need at least"),
    ],
)
def test_bad_edit_input_is_one_line_and_writes_nothing(
    target_dir, edit_inputs, tmp_path, lines, extra, message
):
    import json

    edits = tmp_path / "edits.jsonl"
    edits.write_text("".join(json.dumps(e) + "\n" for e in lines))
    out = tmp_path / "out"
    r = _invoke(
        "edit", "--model", target_dir, "--edits", edits, "--out", out,
        "--covariance-corpus", edit_inputs / "corpus.txt", "--cache-dir", tmp_path / "cache",
        *extra,
    )  # fmt: skip
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_edit_eval_refuses_a_dir_edited_from_other_edits(target_dir, edit_inputs, tmp_path):
    out = edit_inputs / "memit-for-refusal"
    assert _edit(target_dir, edit_inputs, out, "--method", "memit").exit_code == 0
    other = tmp_path / "other.jsonl"
    other.write_text((edit_inputs / "edits.jsonl").read_text().replace("secret", "public"))
    r = _invoke(
        "edit-eval", "--original", target_dir, "--edited", out, "--edits", other,
        "--out", tmp_path / "eval",
    )  # fmt: skip
    assert r.exit_code == 2 and "another edits file" in r.stderr, r.output
    assert not (tmp_path / "eval").exists()


# --- the fact set, the secret edits and the batch-size sweep ------------------------------------


def test_edit_facts_writes_a_consistent_fact_set(tmp_path):
    import json

    from memaudit.editing.facts import RELATIONS

    out = tmp_path / "facts"
    r = _invoke("edit-facts", "--subjects", 6, "--edits", 8, "--controls", 4, "--copies", 3,
                "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    facts = [json.loads(x) for x in (out / "facts.jsonl").read_text().splitlines()]
    edits = [json.loads(x) for x in (out / "edits.jsonl").read_text().splitlines()]
    controls = [json.loads(x) for x in (out / "controls.jsonl").read_text().splitlines()]
    lines = (out / "train.txt").read_text().splitlines()
    assert len(facts) == 6 * len(RELATIONS) and (len(edits), len(controls)) == (8, 4)
    answer = {(f["subject"], f["relation"]): f["answer"] for f in facts}
    template = {rel: prompt for rel, (prompt, _, _) in RELATIONS.items()}
    sentences = {template[f["relation"]].format(f["subject"]) + f["answer"] + "." for f in facts}
    assert sorted(lines) == sorted(s for s in sentences for _ in range(3))
    for e in edits + controls:
        subject, relation = e["id"].split(":")
        assert e["target_true"] == answer[subject, relation] != e["target_new"]
        assert e["target_new"] in RELATIONS[relation][2]
    assert not {e["id"] for e in edits} & {e["id"] for e in controls}
    for args, message in [
        (("--subjects", 4, "--edits", 20), "--subjects 4 give 12"),
        (("--subjects", 3, "--edits", 2, "--controls", 0), "at least 4"),
    ]:
        r = _invoke("edit-facts", *args, "--out", tmp_path / "small")
        assert r.exit_code == 2 and message in r.stderr, r.output
        assert not (tmp_path / "small").exists()


def test_secret_edits_replace_each_secret_with_its_form(target_dir, tmp_path):
    import json

    from memaudit.editing.make import placeholder
    from memaudit.lab.canaries import make_canaries, split_ledger, write_texts_with_prefix

    forget, _ = split_ledger(make_canaries(repetitions=(4,), per_level=8, seed=1))
    write_texts_with_prefix(tmp_path / "forget.jsonl", forget)
    out = tmp_path / "edits.jsonl"
    r = _invoke("edit-secrets", "--forget", tmp_path / "forget.jsonl", "--out", out)
    assert r.exit_code == 0, r.output
    edits = [json.loads(x) for x in out.read_text().splitlines()]
    by_id = {c.id: c for c in forget}
    assert len(edits) == len(forget)
    for e in edits:
        c = by_id[e["id"]]
        assert e["prompt"] == e["subject"] == c.prefix.rstrip()
        assert e["prompt"] + e["target_true"] == c.text
        new = e["target_new"].strip()
        assert new == placeholder(c.text[len(c.prefix) :]).strip() and c.secret not in new
        assert set(new) <= set('0 "') or set(new.split()) == {"redacted"}
    # cut to first tokens in a model's tokenizer: the secret's own, and another one
    from memaudit.models.hf import load_tokenizer

    r = _invoke("edit-secrets", "--forget", tmp_path / "forget.jsonl", "--model", target_dir,
                "--out", tmp_path / "first.jsonl")  # fmt: skip
    assert r.exit_code == 0, r.output
    tok = load_tokenizer(target_dir)

    def n_tokens(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    for e in (json.loads(x) for x in (tmp_path / "first.jsonl").read_text().splitlines()):
        c, prompt = by_id[e["id"]], e["prompt"]
        assert c.text.startswith(prompt + e["target_true"])
        for target in (e["target_true"], e["target_new"]):  # one token (two after a lone space)
            assert n_tokens(prompt + target) - n_tokens(prompt) in (1, 2) and target.strip()
        assert e["target_new"] != e["target_true"]
        ids = tok(c.text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids[n_tokens(prompt) :][:2]).startswith(e["target_true"])
    r = _invoke("edit-secrets", "--forget", tmp_path / "forget.jsonl", "--out",
                tmp_path / "forget.jsonl", "--overwrite")  # fmt: skip
    assert r.exit_code == 2 and "--forget file itself" in r.stderr
    # no prefix field: one line naming the file and line, nothing written
    (tmp_path / "plain.jsonl").write_text(json.dumps({"id": "a", "text": "x = 1"}) + "\n")
    r = _invoke("edit-secrets", "--forget", tmp_path / "plain.jsonl", "--out", tmp_path / "e.jsonl")
    assert r.exit_code == 2 and "plain.jsonl:1" in r.stderr and not (tmp_path / "e.jsonl").exists()


SWEEP_EDITS = [
    {**EDIT, "id": f"s{i}", "subject": s, "prompt": p, "target_new": new, "target_true": old}
    for i, (s, p, new, old) in enumerate(
        [
            ("self", "def __init__({},", " secret", " name"),
            ("cls", "def make({},", " value", " name"),
            ("path", "def read({},", " self", " mode"),
            ("key", "def get(self, {}", ")", ","),
        ]
    )
]


def test_edit_sweep_measures_each_batch_as_edit_eval_does(
    target_dir, edit_inputs, tmp_path, monkeypatch
):
    """The sweep's memit batch of 2 gives the same per-edit NLLs as `edit` + `edit-eval` on a
    file of those 2 edits; the original is not written."""
    import json

    import pyarrow.parquet as pq

    from memaudit.models.hf import load_causal_lm

    before = load_causal_lm(target_dir).fingerprint
    edits = tmp_path / "edits.jsonl"
    edits.write_text("".join(json.dumps(e) + "\n" for e in SWEEP_EDITS))
    common = ("--covariance-corpus", edit_inputs / "corpus.txt", "--covariance-tokens", 2000,
              "--cache-dir", edit_inputs / "cache")  # fmt: skip
    sweep_args = (
        "edit-sweep", "--model", target_dir, "--edits", edits, "--methods", "rome,memit",
        "--batch-sizes", "1,2", "--edits-per-size", 4, "--general", edit_inputs / "corpus.txt",
        "--general-texts", 4, "--n-bootstrap", 20, "--out", tmp_path / "sweep", *common,
    )  # fmt: skip
    r = _invoke(*sweep_args)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "sweep" / "results.json").read_text())
    cells = {(c["method"], c["batch_size"]): c for c in res["sweep"]}
    assert set(cells) == {("rome", 1), ("rome", 2), ("memit", 1), ("memit", 2)}
    assert [cells["rome", 1]["batches"], cells["memit", 2]["batches"]] == [4, 2]
    assert all(c["edits"] == 4 for c in cells.values())
    rows = pq.read_table(tmp_path / "sweep" / "scores.parquet").to_pylist()
    assert len(rows) == 16
    swept = {r["id"]: r["new_nll"] for r in rows if (r["method"], r["batch_size"]) == ("memit", 2)}
    # stopped after three of its four (method, size) cells: a rerun edits only the last's 2
    import memaudit.editing.sweep as sweep_module

    (tmp_path / "sweep" / "results.json").unlink()
    (lost,) = (tmp_path / "sweep" / "cells").glob("memit-x2-*.json")
    lost.unlink()
    calls = []
    real = sweep_module.apply_edits
    monkeypatch.setattr(
        sweep_module, "apply_edits", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    r = _invoke(*sweep_args)
    assert r.exit_code == 0, r.output
    assert len(calls) == 2 and lost.is_file()
    assert pq.read_table(tmp_path / "sweep" / "scores.parquet").to_pylist() == rows
    # both batches of 2, through the commands
    for k in (0, 1):
        batch = tmp_path / f"batch{k}.jsonl"
        batch.write_text("".join(json.dumps(e) + "\n" for e in SWEEP_EDITS[2 * k : 2 * k + 2]))
        edited = tmp_path / f"memit-2-{k}"
        r = _invoke("edit", "--model", target_dir, "--edits", batch, "--method", "memit",
                    "--out", edited, *common)  # fmt: skip
        assert r.exit_code == 0, r.output
        r = _invoke("edit-eval", "--original", target_dir, "--edited", edited, "--edits", batch,
                    "--general", edit_inputs / "corpus.txt", "--general-texts", 4,
                    "--n-bootstrap", 20, "--out", tmp_path / f"eval{k}")  # fmt: skip
        assert r.exit_code == 0, r.output
        evaluated = pq.read_table(tmp_path / f"eval{k}" / "scores.parquet").to_pylist()
        assert len(evaluated) == 2
        for row in evaluated:
            assert row["new_nll"] == pytest.approx(swept[row["id"]], abs=1e-4)
    assert load_causal_lm(target_dir).fingerprint == before
    r = _invoke("edit-sweep", "--model", target_dir, "--edits", edits, "--batch-sizes", "8",
                "--out", tmp_path / "too-many")  # fmt: skip
    assert r.exit_code == 2 and "needs that many edits" in r.stderr
    assert not (tmp_path / "too-many").exists()


def test_key_at_last_reads_the_prompts_last_token(target_dir):
    from memaudit.editing.requests import EditRequest, encode_edits
    from memaudit.models.hf import load_tokenizer

    tok = load_tokenizer(target_dir)
    e = EditRequest("e", "self", "def __init__(self,", " secret", line=3)
    (at_subject,) = encode_edits(tok, [e], key_at="subject", path="x")
    (at_last,) = encode_edits(tok, [e], key_at="last", path="x")
    assert at_last.subject_last == at_last.target_start - 1 > at_subject.subject_last
    assert tok.decode(at_subject.ids[: at_subject.subject_last + 1]).endswith("self")
    bad = EditRequest("b", "x", "x = r", "eturn", line=7)  # ' r' + 'eturn' -> ' return'
    with pytest.raises(InputError, match="x:7: edit 'b'"):
        encode_edits(tok, [bad], key_at="last", path="x")


def test_rome_at_batch_1_rewrites_the_facts_of_a_small_trained_fact_model(tmp_path):
    """The issue's bar: efficacy > 0.9 with ROME, one edit at a time, on a fact model trained
    here (~20 s). Only edits whose new target is one token are held to it: this model's
    vocabulary is its 36 facts', so a value no fact has (' bread') is split into letters, and
    an edit at the prompt's last token sets the first of them only."""
    import json

    import pyarrow.parquet as pq

    from memaudit.models.hf import load_tokenizer

    facts, model, sweep = tmp_path / "facts", tmp_path / "model", tmp_path / "sweep"
    r = _invoke("edit-facts", "--subjects", 12, "--edits", 16, "--controls", 4, "--out", facts)
    assert r.exit_code == 0, r.output
    r = _invoke("train", "--corpus", facts / "train.txt", "--model-size", "micro", "--steps", 300,
                "--batch-size", 16, "--seq-len", 64, "--context", 64, "--lr", 3e-3,
                "--vocab-size", 400, "--checkpoint-every", 0, "--out", model)  # fmt: skip
    assert r.exit_code == 0, r.output
    r = _invoke("edit-sweep", "--model", model, "--edits", facts / "edits.jsonl", "--key-at",
                "last", "--methods", "rome", "--batch-sizes", 1, "--edits-per-size", 16,
                "--covariance-corpus", facts / "train.txt", "--covariance-tokens", 3000,
                "--general", facts / "general.txt", "--general-texts", 8, "--n-bootstrap", 20,
                "--cache-dir", tmp_path / "cache", "--out", sweep)  # fmt: skip
    assert r.exit_code == 0, r.output
    tok = load_tokenizer(model)

    def n_tokens(text: str) -> int:
        return len(tok(text, verbose=False)["input_ids"])

    edits = [json.loads(x) for x in (facts / "edits.jsonl").read_text().splitlines()]
    prompts = {e["id"]: e["prompt"].replace("{}", e["subject"]) for e in edits}
    one_token = {
        e["id"]
        for e in edits
        if n_tokens(prompts[e["id"]] + e["target_new"]) == n_tokens(prompts[e["id"]]) + 1
    }
    rows = pq.read_table(sweep / "scores.parquet").to_pylist()
    held = [r["efficacy"] for r in rows if r["id"] in one_token]
    assert len(held) >= 8 and np.mean(held) > 0.9
