"""``memaudit shadows train`` and ``mia --shadows``: balanced halves, resume, bad input, the CLI."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import shadows_config, write_jsonl
from memaudit.attacks import parse_attacks
from memaudit.attacks.shadows import read_shadows
from memaudit.cli.app import app
from memaudit.errors import InputError
from memaudit.mia.config import ShadowsTrainConfig
from memaudit.mia.shadows import balanced_membership, run_shadows_train
from memaudit.models.hf import model_fingerprint, tokenizer_fingerprint

runner = CliRunner()


class Killed(Exception):
    """A shadow training killed from its progress callback."""


def test_layout_and_balanced_membership(shadows_dir, snippets, target_dir):
    record = json.loads((shadows_dir / "shadows.json").read_text())
    pool = [json.loads(line)["text"] for line in open(shadows_dir / "pool.jsonl")]
    assert pool == snippets["members"] + snippets["nonmembers"]  # in order: matrix columns
    membership = np.load(shadows_dir / "membership.npz")["membership"]
    assert membership.shape == (4, 200) and membership.dtype == bool
    assert (membership.sum(axis=0) == 2).all()  # every text in exactly half of the shadows
    assert [s["dir"] for s in record["shadows"]] == [f"model-{i}" for i in range(4)]
    assert [s["seed"] for s in record["shadows"]] == [0, 1, 2, 3]
    for i, s in enumerate(record["shadows"]):
        model = shadows_dir / s["dir"]
        assert s["fingerprint"] == model_fingerprint(model)
        assert tokenizer_fingerprint(model) == tokenizer_fingerprint(target_dir)
        half = [
            json.loads(line)["text"] for line in open(shadows_dir / "halves" / f"{s['dir']}.jsonl")
        ]
        assert half == [t for t, keep in zip(pool, membership[i]) if keep]
        train = json.loads((model / "memaudit_train.json").read_text())
        assert train["config"]["steps"] == 60 and train["config"]["model_size"] == "micro"
    # a text outside the pool is OUT for every shadow
    shadows = read_shadows(shadows_dir, tokenizer=tokenizer_fingerprint(target_dir))
    rows = shadows.member([pool[0], "never in the pool"])
    np.testing.assert_array_equal(rows[0], membership[:, 0])
    assert not rows[1].any()


def test_balanced_membership_is_seeded_and_exactly_half():
    m = balanced_membership(8, 1000, seed=3)
    assert (m.sum(axis=0) == 4).all()
    assert abs(m.sum(axis=1) - 500).max() < 60  # each shadow trains on about half
    np.testing.assert_array_equal(m, balanced_membership(8, 1000, seed=3))
    assert not np.array_equal(m, balanced_membership(8, 1000, seed=4))


def _small(tmp_path, snippets, target_dir, out, **changes):
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"text": t} for t in snippets["members"][:40]])
    settings = dict(n_models=2, steps=8, batch_size=4, seq_len=32, checkpoint_every=4)
    return shadows_config(pool, tmp_path / out, target_dir, **{**settings, **changes})


def test_a_killed_run_resumes_to_the_same_shadows(tmp_path, snippets, target_dir):
    straight = run_shadows_train(_small(tmp_path, snippets, target_dir, "a"))
    seen = []

    def killed_in_the_second_shadow(stage, done, total, note=""):
        seen.append((stage, done))
        if ("shadows", 1) in seen and stage == "training" and done == 6:
            raise Killed

    with pytest.raises(Killed):
        run_shadows_train(
            _small(tmp_path, snippets, target_dir, "b"), progress=killed_in_the_second_shadow
        )
    b = tmp_path / "b"
    assert not (b / "shadows.json").exists()
    assert (b / "model-0" / "memaudit_train.json").is_file()  # the first one finished
    assert [p.name for p in (b / "model-1").glob("checkpoint-*")] == ["checkpoint-0000004"]
    first = (b / "model-0" / "model.safetensors").stat().st_mtime_ns
    notes = []
    resumed = run_shadows_train(
        _small(tmp_path, snippets, target_dir, "b"),
        progress=lambda stage, done, total, note="": notes.append((stage, done, note)),
    )
    assert (b / "model-0" / "model.safetensors").stat().st_mtime_ns == first  # skipped
    assert ("training", 4, "resumed from the checkpoint of step 4") in notes
    for name in ("pool.jsonl", "membership.npz"):
        assert (resumed / name).read_bytes() == (straight / name).read_bytes()
    shadows = [json.loads((d / "shadows.json").read_text())["shadows"] for d in (straight, b)]
    assert [s["fingerprint"] for s in shadows[0]] == [s["fingerprint"] for s in shadows[1]]
    # finished: a rerun returns at once; other settings are refused
    assert run_shadows_train(_small(tmp_path, snippets, target_dir, "b")) == b
    with pytest.raises(InputError, match="other settings"):
        run_shadows_train(_small(tmp_path, snippets, target_dir, "b", seed=1))


def test_a_bad_pool_names_file_and_line_and_writes_nothing(tmp_path, snippets, target_dir):
    good = [{"text": t} for t in snippets["members"][:10]]
    for rows, message, line in (
        ([*good, "{oops"], "malformed JSON", 11),
        ([*good, good[2]], "the same text as line 3", 11),
    ):
        pool = write_jsonl(tmp_path / "bad.jsonl", rows)
        with pytest.raises(InputError, match=message) as e:
            run_shadows_train(shadows_config(pool, tmp_path / "out", target_dir))
        assert e.value.line == line and e.value.path == str(pool)
        assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="even"):
        shadows_config(pool, tmp_path / "out", target_dir, n_models=3)


def test_shadow_attack_parameters_are_checked_at_parse_time():
    for spec, message in (
        ("lira:fixed_variance=2", "fixed_variance must be 0 or 1"),
        ("rmia:gamma=0", "gamma must be > 0"),
        ("rmia:a=1.5", r"a must be in \[0, 1\]"),
        ("rmia:online=0.5", "online must be 0 or 1"),
    ):
        with pytest.raises(InputError, match=message):
            parse_attacks(spec)


def _mia(target_dir, data_files, out, *extra):
    args = ["mia", "--model", target_dir, "--members", data_files["members"]]
    args += ["--nonmembers", data_files["nonmembers"], "--out", out, "--n-bootstrap", 50]
    return runner.invoke(app, [*map(str, args), *map(str, extra)])


def test_mia_with_shadows_through_the_cli(tmp_path, shadows_dir, target_dir, data_files):
    out = tmp_path / "run"
    r = _mia(
        target_dir,
        data_files,
        out,
        "--attacks",
        "loss,lira,lira_offline,rmia",
        "--shadows",
        shadows_dir,
        "--population",
        data_files["nonmembers2"],
        "--no-report",
    )
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    aucs = {name: m["auc"]["value"] for name, m in results["metrics"].items()}
    assert set(aucs) == {"loss", "lira", "lira_offline", "rmia"}
    assert min(aucs.values()) > 0.65, aucs
    assert {f"shadows/model-{i}" for i in range(4)} <= set(results["scoring"])
    # under --attacks all without --shadows, the shadow attacks are left out with a note
    r = _mia(target_dir, data_files, tmp_path / "all", "--no-report")
    assert r.exit_code == 0, r.output
    notes = json.loads((tmp_path / "all" / "results.json").read_text())["notes"]
    assert any("lira" in n and "--shadows" in n for n in notes), notes


def test_mia_refuses_shadows_of_another_tokenizer(
    tmp_path, shadows_dir, target_dir, reference_dir, data_files
):
    other = tmp_path / "other"
    shutil.copytree(shadows_dir, other)
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        if (reference_dir / name).is_file():
            shutil.copy2(reference_dir / name, other / "model-1" / name)
    for shadows, message in ((other, "not the target's"), (tmp_path, "not a finished shadows")):
        out = tmp_path / "run"
        r = _mia(target_dir, data_files, out, "--attacks", "lira", "--shadows", shadows)
        assert r.exit_code == 2 and message in r.stderr, r.output
        assert not (out / "results.json").exists() and not (out / "scores.parquet").exists()
    r = _mia(target_dir, data_files, tmp_path / "run", "--attacks", "rmia", "--shadows", other)
    assert r.exit_code == 2 and "--population" in r.stderr, r.output


def test_config_checks(tmp_path):
    with pytest.raises(InputError, match="even and >= 2"):
        ShadowsTrainConfig(pool="p", out=str(tmp_path), n_models=1)
