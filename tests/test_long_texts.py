"""Long texts cost what a command uses of them: heads tokenized alone, windows scored alone."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from memaudit.cli.app import app
from memaudit.models.heads import head_ids, text_heads
from memaudit.scoring.engine import ScoreSettings, score_texts


@pytest.fixture(scope="module")
def awkward_texts(snippets) -> list[str]:
    """Texts whose heads a tokenizer might get wrong at a cut: long prose, one 40k-char word,
    a long run of spaces, multi-byte characters, and a short text."""
    rng = random.Random(0)
    word = "".join(rng.choice("abcdefghij") for _ in range(40_000))
    return [
        "\n".join(snippets["nonmembers2"][:60]),
        word,
        " " * 5_000 + snippets["members"][0],
        "é漢🙂 " * 3_000,
        snippets["members"][1][:40],
    ]


@pytest.mark.parametrize("n", [1, 7, 64, 300])
def test_head_ids_equal_the_whole_texts_first_ids(target, awkward_texts, n):
    whole = target.encode(awkward_texts)
    assert head_ids(target, awkward_texts, n) == [ids[:n] for ids in whole]


def test_text_heads_cut_after_the_nth_token_and_leave_short_texts_whole(target, awkward_texts):
    n = 50
    heads, cut = text_heads(target, awkward_texts, n)
    whole = target.encode(awkward_texts)
    for text, head, was_cut, ids in zip(awkward_texts, heads, cut, whole):
        assert was_cut == (len(ids) > n)
        if not was_cut:
            assert head == text
            continue
        assert text.startswith(head) and len(head) < len(text)
        assert target.encode([head])[0][: n - 1] == ids[: n - 1]


def test_progress_moves_by_batch_within_one_long_text(target, snippets):
    long_text = "\n".join(snippets["nonmembers"][:8])
    calls = []
    settings = ScoreSettings(max_length=64, batch_tokens=256)
    _, stats = score_texts(
        target,
        [long_text],
        settings,
        progress=lambda stage, done, total, note="": calls.append((done, total)),
    )
    assert len(calls) == stats.forward_passes > 2
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == calls[-1][1] == stats.tokens_scored


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_extract_scores_only_the_window_of_a_long_line(target, snippets, tmp_path):
    long_line = " ".join(snippets["nonmembers2"]).replace("\n", " ")  # one line, ~50k chars
    texts = [long_line, snippets["members"][2], snippets["members"][3]]
    k, m = 8, 8
    heads, _ = text_heads(target, texts, k + m + 4)  # each text cut a little past its window
    runs = {}
    for name, rows in (("whole", texts), ("heads", heads)):
        data = _write(
            tmp_path / f"{name}.jsonl", [{"id": str(i), "text": t} for i, t in enumerate(rows)]
        )
        out = tmp_path / name
        r = CliRunner().invoke(
            app,
            ["extract", "--model", target.name, "--data", str(data), "-k", str(k), "-m", str(m)]
            + ["--out", str(out), "--no-report", "--no-cache"],
        )
        assert r.exit_code == 0, r.output
        runs[name] = (
            json.loads((out / "results.json").read_text()),
            pq.read_table(out / "scores.parquet"),
        )
    res, scores = runs["whole"]
    assert res["scoring"]["tokens_scored"] == len(texts) * (k + m - 1)  # the windows, not the line
    assert scores.drop_columns("source").equals(runs["heads"][1].drop_columns("source"))


def test_mia_cuts_long_texts_and_counts_them(target_dir, target, snippets, tmp_path):
    # some short texts, some long, both classes
    members = [{"text": t[: 30 + 40 * (i % 3)]} for i, t in enumerate(snippets["members"][:12])]
    nonmembers = [
        {"text": t[: 30 + 40 * (i % 3)]} for i, t in enumerate(snippets["nonmembers"][:12])
    ]
    limit = 24
    n_long = sum(
        len(ids) > limit for ids in target.encode([r["text"] for r in members + nonmembers])
    )
    assert 0 < n_long < 24
    out = tmp_path / "mia"
    r = CliRunner().invoke(
        app,
        [
            "mia",
            "--model",
            str(target_dir),
            "--members",
            str(_write(tmp_path / "m.jsonl", members)),
            "--nonmembers",
            str(_write(tmp_path / "n.jsonl", nonmembers)),
            "--attacks",
            "loss",
            "--max-tokens-per-text",
            str(limit),
            "--n-bootstrap",
            "5",
            "--no-report",
            "--no-cache",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["texts_cut"] == n_long and res["data"]["max_tokens_per_text"] == limit
    assert any(f"{n_long} text(s) longer than {limit}" in note for note in res["notes"])
    assert max(pq.read_table(out / "scores.parquet").column("n_tokens").to_pylist()) <= limit + 1


def test_dataset_inference_cuts_long_texts_too(target_dir, target, data_files, tmp_path):
    limit = 24
    texts = [
        json.loads(line)["text"]
        for name in ("members", "nonmembers")
        for line in data_files[name].read_text().splitlines()
    ]
    n_long = sum(len(ids) > limit for ids in target.encode(texts))
    r = CliRunner().invoke(
        app,
        ["dataset-inference", "--model", str(target_dir), "--suspect", str(data_files["members"])]
        + ["--validation", str(data_files["nonmembers"]), "--splits", "2", "--no-report"]
        + ["--max-tokens-per-text", str(limit), "--out", str(tmp_path / "di")],
    )
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "di" / "results.json").read_text())["data"]
    assert data["texts_cut"] == n_long > 0 and data["max_tokens_per_text"] == limit


def test_a_limit_of_one_token_is_refused_at_the_flag(target_dir, data_files, tmp_path):
    r = CliRunner().invoke(
        app,
        ["mia", "--model", str(target_dir), "--members", str(data_files["members"])]
        + ["--nonmembers", str(data_files["nonmembers"]), "--max-tokens-per-text", "1"]
        + ["--out", str(tmp_path / "run")],
    )
    assert r.exit_code == 2 and "max_tokens_per_text must be 0 (no limit) or >= 2" in r.output
    assert not (tmp_path / "run").exists()
