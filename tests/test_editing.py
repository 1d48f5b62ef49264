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
