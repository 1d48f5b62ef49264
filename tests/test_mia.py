"""``memaudit mia`` end to end, through the command line, on real tiny models."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import write_jsonl
from memaudit.attacks import ATTACKS
from memaudit.attacks.base import default_attacks
from memaudit.cli.app import app
from memaudit.models import load_causal_lm

runner = CliRunner()


def mia(*args):
    return runner.invoke(app, ["mia", *map(str, args)])


@pytest.fixture(scope="module")
def full_run(target_dir, reference_dir, data_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    r = mia(
        "--model",
        target_dir,
        "--reference",
        reference_dir,
        "--members",
        data_files["members"],
        "--nonmembers",
        data_files["nonmembers"],
        "--out",
        out,
        "--cache-dir",
        out / "cache",
    )
    assert r.exit_code == 0, r.output
    return out, r


def test_trained_members_are_detected(full_run):
    out, r = full_run
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["loss"]["auc"]["value"] > 0.9
    # attacks that need a setting other than --reference are left out, each with a note
    needs_more = {a.name for a in ATTACKS if set(a.requires()) - {"reference"}}
    assert set(results["metrics"]) == set(default_attacks()) - needs_more
    for name in needs_more:
        assert any(n.startswith(f"attack '{name}' left out") for n in results["notes"])
    assert "min_k_pp" in r.stdout and "report:" in r.stdout
    assert "attack 'gradnorm' left out: expensive, name it in --attacks" in r.stderr


def test_tpr_at_an_fpr_below_one_non_member_is_not_shown_and_says_why(full_run):
    out, r = full_run
    results = json.loads((out / "results.json").read_text())
    n = results["data"]["nonmembers"]["n"]
    assert n < 1000  # so at least 0.1% FPR is below one false positive
    report = (out / "report.html").read_text()
    for bound, shown in ((0.01, "1%"), (0.001, "0.1%")):
        note = f"only {n} non-members: TPR at {shown} FPR is shown as n/a"
        noted = any(x.startswith(note) for x in results["notes"])
        assert noted == (bound < 1 / n), results["notes"]
        entry = results["metrics"]["loss"][f"tpr@{shown}fpr"]
        assert entry["supported"] == (not noted)
        if noted:
            assert note in report and note in r.stderr
            assert "n/a" in report and "n/a" in r.stdout


def test_run_dir_holds_everything_needed_to_reproduce(full_run, target_dir):
    out, _ = full_run
    results = json.loads((out / "results.json").read_text())
    assert results["schema_version"] == 1 and results["command"] == "mia"
    assert (
        results["config"]["model"] == str(target_dir) and results["config"]["n_bootstrap"] == 1000
    )
    assert results["versions"]["torch"] and results["versions"]["memaudit"]
    assert len(results["models"]["target"]["fingerprint"]) == 16
    assert results["reference_tokenizer_differs"] is True
    auc = results["metrics"]["zlib"]["auc"]
    assert auc["ci_low"] <= auc["value"] <= auc["ci_high"]
    assert results["roc"]["loss"]["fpr"][0] == 0.0 and results["roc"]["loss"]["tpr"][-1] == 1.0
    # one forward pass per text window per model: the target (texts and lowercased texts) and the
    # reference
    target, ref = results["scoring"]["target"], results["scoring"]["reference"]
    assert target["texts"] == 400 and ref["texts"] == ref["unique_texts"] == 200
    assert target["unique_texts"] < 400  # a text already in lower case is scored once
    for model in (target, ref):  # a few texts outgrow one window
        assert model["unique_texts"] <= model["windows"] < 1.1 * model["unique_texts"]

    table = pq.read_table(out / "scores.parquet").to_pydict()
    assert sum(n - 1 for n in table["n_tokens"]) < target["tokens_scored"]
    assert len(table["id"]) == 200 and table["id"][0] == "members-0" and table["label"][:1] == [1]
    assert set(results["metrics"]) <= set(table) and "group" in table and "n_tokens" in table

    html = (out / "report.html").read_text()
    assert (
        "ROC curves" in html
        and "data:image/png;base64" in html
        and "http" not in html.replace("http-equiv", "")
    )


def test_unseen_vs_unseen_is_at_chance(target_dir, data_files, tmp_path):
    r = mia(
        "--model",
        target_dir,
        "--members",
        data_files["nonmembers"],
        "--nonmembers",
        data_files["nonmembers2"],
        "--out",
        tmp_path,
        "--attacks",
        "loss,min_k",
        "--no-report",
    )
    assert r.exit_code == 0, r.output
    for attack in ("loss", "min_k"):
        auc = json.loads((tmp_path / "results.json").read_text())["metrics"][attack]["auc"]
        assert auc["ci_low"] <= 0.5 <= auc["ci_high"], auc


def test_second_run_does_no_forward_pass(full_run, target_dir, reference_dir, data_files, tmp_path):
    cache, _ = full_run
    r = mia(
        "--model",
        target_dir,
        "--reference",
        reference_dir,
        "--members",
        data_files["members"],
        "--nonmembers",
        data_files["nonmembers"],
        "--out",
        tmp_path,
        "--cache-dir",
        cache / "cache",
        "--attacks",
        "min_k:k=0.05,reference",
        "--no-report",
    )
    assert r.exit_code == 0, r.output
    scoring = json.loads((tmp_path / "results.json").read_text())["scoring"]
    assert all(v["forward_passes"] == 0 for v in scoring.values())


def test_overlap_warning_and_skip_invalid(target_dir, data_files, tmp_path):
    members = Path(data_files["members"]).read_text().splitlines()
    nonmembers = write_jsonl(
        tmp_path / "non.jsonl",
        members[:3]
        + ['{"text": ""}', "not json", '{"text": "x"}']
        + Path(data_files["nonmembers"]).read_text().splitlines()[:20],
    )
    r = mia(
        "--model",
        target_dir,
        "--members",
        data_files["members"],
        "--nonmembers",
        nonmembers,
        "--out",
        tmp_path / "run",
        "--skip-invalid",
        "--attacks",
        "loss",
        "--n-bootstrap",
        "50",
    )
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["warnings"] == ["3 text(s) appear among both members and non-members"]
    assert "3 text(s) appear" in r.stderr
    skipped = {
        (s["line"], s["reason"].split(" (")[0].split(";")[0]) for s in results["data"]["skipped"]
    }
    assert skipped == {
        (4, "empty text"),
        (5, "malformed JSON"),
        (6, "text has 1 token(s) under the target tokenizer"),
    }
    assert results["data"]["nonmembers"]["n"] == 23


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such file or directory"),
        ("malformed", "non.jsonl:2: malformed JSON"),
        ("no_text", "non.jsonl:1: missing 'text' field"),
        ("empty", "non.jsonl:2: empty text"),
        ("unknown_attack", "unknown attack 'zlb'; did you mean 'zlib'?"),
        ("no_weights", "no .safetensors weights"),
        ("hub_id", "models are loaded from local directories only"),
        ("one_token", "non.jsonl:1: text has 1 token(s)"),
        ("reference_needed", "needs --reference, which was not given"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(case, message, target_dir, data_files, tmp_path):
    non = tmp_path / "non.jsonl"
    model, attacks = target_dir, "all"
    if case == "malformed":
        write_jsonl(non, ['{"text": "fine"}', '{"text": '])
    elif case == "no_text":
        write_jsonl(non, ['{"content": "x"}'])
    elif case == "empty":
        write_jsonl(non, ['{"text": "fine"}', '{"text": ""}'])
    elif case == "one_token":
        write_jsonl(non, ['{"text": "x"}'])
    else:
        write_jsonl(non, ['{"text": "def f(): pass"}'])
    if case == "missing":
        non = tmp_path / "absent.jsonl"
    if case == "unknown_attack":
        attacks = "loss,zlb"
    if case == "reference_needed":
        attacks = "loss,reference"
    if case == "no_weights":
        model = tmp_path / "empty_model"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    if case == "hub_id":
        model = "EleutherAI/pythia-70m"
    out = tmp_path / "run"
    out.mkdir()
    earlier = '{"config": {"seed": 0}, "note": "an earlier run"}'
    (out / "results.json").write_text(earlier)
    r = mia(
        "--model",
        model,
        "--members",
        data_files["members"],
        "--nonmembers",
        non,
        "--out",
        out,
        "--attacks",
        attacks,
    )
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not (out / "scores.parquet").exists()
    # the input is checked before any output: the earlier run's results are left as they were
    assert (out / "results.json").read_text() == earlier


def test_killed_run_resumes_to_identical_scores(target_dir, data_files, tmp_path):
    common = [
        "--model",
        target_dir,
        "--members",
        data_files["members"],
        "--nonmembers",
        data_files["nonmembers"],
        "--attacks",
        "loss,min_k_pp,lowercase",
        "--shard-texts",
        "2",
        "--batch-tokens",
        "256",
        "--n-bootstrap",
        "20",
    ]
    straight = mia(
        *common,
        "--out",
        tmp_path / "straight",
        "--cache-dir",
        tmp_path / "cache_straight",
        "--no-report",
    )
    assert straight.exit_code == 0, straight.output

    cache = tmp_path / "cache_killed"
    args = [
        sys.executable,
        "-m",
        "memaudit",
        "mia",
        *map(str, common),
        "--out",
        str(tmp_path / "killed"),
        "--cache-dir",
        str(cache),
        "--no-report",
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy()
    )
    deadline = time.time() + 120
    while (
        time.time() < deadline
        and proc.poll() is None
        and len(list(cache.glob("*/shard-*.npz"))) < 3
    ):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list(cache.glob("*/shard-*.npz")))
    assert 0 < n_before < 190, n_before  # about 190 shards of 2 texts when complete
    assert not (tmp_path / "killed" / "results.json").exists()
    # a shard that exists is whole (a killed write leaves only a .tmp, never read)
    from memaudit.scoring.cache import checksum

    for shard in cache.glob("*/shard-*.npz"):
        with np.load(shard, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        assert str(arrays["checksum"]) == checksum(arrays), shard
    assert all(p.name.endswith(".tmp") for p in cache.glob("*/.*"))

    resumed = mia(*common, "--out", tmp_path / "killed", "--cache-dir", cache, "--no-report")
    assert resumed.exit_code == 0, resumed.output
    scoring = json.loads((tmp_path / "killed" / "results.json").read_text())["scoring"]
    assert scoring["target"]["cached_texts"] >= 2 * (n_before - 1)
    a = pq.read_table(tmp_path / "straight" / "scores.parquet").to_pydict()
    b = pq.read_table(tmp_path / "killed" / "scores.parquet").to_pydict()
    assert a == b


def test_attacks_command_lists_every_attack():
    r = runner.invoke(app, ["attacks"])
    assert r.exit_code == 0
    for name in ATTACKS.names():
        assert name in r.stdout
    assert "opt-in" in r.stdout


@pytest.fixture(scope="module")
def small_files(snippets, tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("small")
    return (
        write_jsonl(d / "m.jsonl", [{"text": t} for t in snippets["members"][:5]]),
        write_jsonl(d / "n.jsonl", [{"text": t} for t in snippets["nonmembers"][:5]]),
    )


def test_expensive_attacks_run_when_named(target_dir, mlm_dir, small_files, tmp_path):
    members, nonmembers = small_files
    out = tmp_path / "run"
    flags = ["--neighbour-model", mlm_dir, "--neighbours", 2, "--samia-samples", 2]
    attacks = "loss,samia,samia:zlib=1,neighbourhood,gradnorm:p=2"
    r = mia("--model", target_dir, "--members", members, "--nonmembers", nonmembers,
            "--attacks", attacks, *flags, "--out", out, "--n-bootstrap", 5,
            "--no-report")  # fmt: skip
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    assert list(results["metrics"]) == attacks.split(",")
    assert "suffix-length generation steps" in results["attacks"]["samia"]["cost"]
    assert results["scoring"]["neighbourhood/target"]["texts"] == 10 * 2
    assert results["config"]["neighbours"] == 2 and results["config"]["samia_samples"] == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--attacks", "neighbourhood"], "needs --neighbour-model, which was not given"),
        (["--attacks", "neighbourhood", "--neighbour-model", "TARGET"], "not a loadable masked LM"),
        (["--attacks", "neighbourhood", "--neighbour-model", "MISSING"],
         "not a local model directory"),
        (["--attacks", "samia", "--samia-prefix-share", "1"], "--samia-prefix-share must be in"),
        (["--attacks", "gradnorm:p=3"], "p must be 1, 2 or inf"),
    ],
)  # fmt: skip
def test_bad_expensive_attack_input_one_line_nothing_written(
    flags, message, target_dir, small_files, tmp_path
):
    members, nonmembers = small_files
    out = tmp_path / "run"
    paths = {"TARGET": str(target_dir), "MISSING": str(tmp_path / "no_mlm")}
    flags = [paths.get(f, f) for f in flags]
    r = mia("--model", target_dir, "--members", members, "--nonmembers", nonmembers,
            *flags, "--out", out)  # fmt: skip
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not out.exists()


def test_mia_help_explains_inputs():
    r = runner.invoke(app, ["mia", "--help"])
    assert r.exit_code == 0 and "--members" in r.stdout and "--reference" in r.stdout


def test_config_file_then_flags(target_dir, data_files, tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        f'members = "{data_files["members"]}"\nnonmembers = "{data_files["nonmembers"]}"\n'
        'attacks = "loss,zlib"\nn_bootstrap = 25\nseed = 3\n'
    )
    r = mia(
        "--config",
        cfg,
        "--model",
        target_dir,
        "--attacks",
        "min_k:k=0.5",
        "--out",
        tmp_path / "run",
        "--no-report",
    )
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "run" / "results.json").read_text())["config"]
    assert (config["attacks"], config["n_bootstrap"], config["seed"]) == ("min_k:k=0.5", 25, 3)
    (tmp_path / "bad.json").write_text('{"atacks": "loss"}')
    r = mia("--config", tmp_path / "bad.json", "--model", target_dir)
    assert r.exit_code == 2 and "unknown setting(s): atacks" in r.stderr


def test_index_adds_corpus_counts_and_auc_per_duplication_bucket(
    full_run, target_dir, snippets, data_files, tmp_path
):
    from sklearn.metrics import roc_auc_score

    from memaudit.index.build import IndexBuildConfig, build_index

    members = snippets["members"]
    corpus = write_jsonl(
        tmp_path / "corpus.jsonl", [{"text": t} for t in members + members[:20] * 9]
    )
    build_index(
        IndexBuildConfig(
            corpus=str(corpus),
            tokenizer=str(target_dir),
            out=str(tmp_path / "idx"),
            max_shard_tokens=4000,
        )
    )
    cache, _ = full_run
    r = mia(
        "--model",
        target_dir,
        "--members",
        data_files["members"],
        "--nonmembers",
        data_files["nonmembers"],
        "--attacks",
        "loss,zlib,dc_pdd",
        "--index",
        tmp_path / "idx",
        "--out",
        tmp_path / "run",
        "--cache-dir",
        cache / "cache",
    )
    assert r.exit_code == 0, r.output
    assert "AUC by corpus occurrences" in r.stdout
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    table = pq.read_table(tmp_path / "run" / "scores.parquet").to_pydict()
    assert (
        table["corpus_count"] == [10] * 20 + [1] * 80 + [0] * 100
    )  # members: 20 seen ten times, 80 once; non-members absent
    assert list(res["by_duplication"]) == ["1", "5-16"]
    for bucket, rows in (("1", range(20, 200)), ("5-16", [*range(20), *range(100, 200)])):
        auc = roc_auc_score([table["label"][i] for i in rows], [table["loss"][i] for i in rows])
        assert res["by_duplication"][bucket]["metrics"]["loss"]["auc"]["value"] == pytest.approx(
            auc
        )
    assert "By duplication" in (tmp_path / "run" / "report.html").read_text()
    # dc_pdd calibrated by the index's counts equals dc_pdd given the same counts in a file
    ids = np.concatenate([np.asarray(t) for t in load_causal_lm(target_dir).encode(
        members + members[:20] * 9)])  # fmt: skip
    values, counts = np.unique(ids, return_counts=True)
    freq = write_jsonl(
        tmp_path / "counts.jsonl", [{"id": int(v), "count": int(c)} for v, c in zip(values, counts)]
    )
    r = mia(
        "--model", target_dir, "--members", data_files["members"],
        "--nonmembers", data_files["nonmembers"], "--attacks", "dc_pdd",
        "--token-frequencies", freq, "--out", tmp_path / "run_file", "--cache-dir", cache / "cache",
        "--no-report", "--n-bootstrap", 10,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    from_file = pq.read_table(tmp_path / "run_file" / "scores.parquet").to_pydict()["dc_pdd"]
    np.testing.assert_allclose(from_file, table["dc_pdd"], rtol=1e-9)


# ---- one labelled file holding both classes (WikiMIA, MIMIR) --------------------------------


@pytest.fixture(scope="module")
def two_file_scores(target_dir, snippets, tmp_path_factory):
    """loss scores of 20 members and 20 non-members given as two files, by text."""
    d = tmp_path_factory.mktemp("two_files")
    write_jsonl(d / "m.jsonl", [json.dumps({"text": t}) for t in snippets["members"][:20]])
    write_jsonl(d / "n.jsonl", [json.dumps({"text": t}) for t in snippets["nonmembers"][:20]])
    r = mia(
        "--model", target_dir, "--members", d / "m.jsonl", "--nonmembers", d / "n.jsonl",
        "--attacks", "loss", "--no-cache", "--no-report", "--n-bootstrap", 10, "--out", d / "run",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return _loss_by_label(d / "run")


def _loss_by_label(run_dir):
    rows = pq.read_table(run_dir / "scores.parquet").to_pylist()
    return {lab: sorted(r["loss"] for r in rows if r["label"] == lab) for lab in (0, 1)}


@pytest.mark.parametrize("layout", ["wikimia_jsonl", "wikimia_parquet", "mimir_pairs"])
def test_one_labelled_file_scores_as_two_files_do(
    layout, target_dir, snippets, two_file_scores, tmp_path
):
    members, nonmembers = snippets["members"][:20], snippets["nonmembers"][:20]
    if layout == "mimir_pairs":
        rows = [{"member": m, "nonmember": n} for m, n in zip(members, nonmembers)]
        flags = ["--pair-fields", "member,nonmember"]
    else:  # WikiMIA: the text in 'input', 'label' 1 for members; classes interleaved
        rows = [{"input": t, "label": lab} for m, n in zip(members, nonmembers)
                for t, lab in ((m, 1), (n, 0))]  # fmt: skip
        flags = ["--text-field", "input"]
    if layout == "wikimia_parquet":
        import pyarrow as pa

        data = tmp_path / "wikimia.parquet"
        pq.write_table(pa.Table.from_pylist(rows), data)
    else:
        data = tmp_path / "data.jsonl"
        write_jsonl(data, [json.dumps(r) for r in rows])
    r = mia(
        "--model", target_dir, "--data", data, *flags, "--attacks", "loss", "--no-cache",
        "--no-report", "--n-bootstrap", 10, "--out", tmp_path / "run",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    got = _loss_by_label(tmp_path / "run")
    for lab in (0, 1):
        np.testing.assert_allclose(got[lab], two_file_scores[lab], rtol=1e-6)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["data"]["members"] == {"path": str(data), "n": 20}


@pytest.mark.parametrize(
    "rows, flags, message",
    [
        (['{"text": "a = 1", "label": 1}', '{"text": "b = 2", "label": 2}'], [],
         "data.jsonl:2: label field 'label' must be 0 or 1, got 2"),
        (['{"text": "a = 1", "label": 1}', '{"text": "b = 2", "label": "0"}'], [],
         "data.jsonl:2: label field 'label' must be 0 or 1, got '0'"),
        (['{"text": "a = 1", "label": 1}', '{"text": "b = 2"}'], [],
         "data.jsonl:2: label field 'label' must be 0 or 1, got nothing"),
        (['{"text": "a = 1", "label": 1}', '{"text": "b = 2", "label": 1}'], [],
         "no valid non-members left to score"),
        (['{"member": "a = 1", "nonmember": "b = 2"}'], ["--pair-fields", "member"],
         "--pair-fields needs two field names"),
        (['{"text": "a = 1", "label": 1}'], ["--members", "m.jsonl"],
         "give either --data or --members/--nonmembers, not both"),
    ],
)  # fmt: skip
def test_bad_labelled_file_one_line_exit_2(rows, flags, message, target_dir, tmp_path):
    data = tmp_path / "data.jsonl"
    write_jsonl(data, rows)
    out = tmp_path / "run"
    r = mia("--model", target_dir, "--data", data, *flags, "--attacks", "loss", "--out", out)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert not out.exists()


def test_members_without_nonmembers_is_one_line_error(target_dir, data_files, tmp_path):
    r = mia("--model", target_dir, "--members", data_files["members"], "--out", tmp_path / "r")
    assert r.exit_code == 2 and "give --members and --nonmembers" in r.stderr, r.output


# ---- conditional and calibrated attacks (recall, con_recall, dc_pdd, pac) --------------------


@pytest.fixture(scope="module")
def small_sets(snippets, tmp_path_factory):
    d = tmp_path_factory.mktemp("small_sets")
    for name, texts in (
        ("m", snippets["members"][:20]),
        ("n", snippets["nonmembers"][:20]),
        ("p", snippets["nonmembers2"][:12]),
        ("mp", snippets["members"][:3]),  # scored too: a warning
    ):
        write_jsonl(d / f"{name}.jsonl", [{"text": t} for t in texts])
    return d


def test_prefix_and_augmentation_flags(target_dir, small_sets, tmp_path):
    d = small_sets
    r = mia(
        "--model", target_dir, "--members", d / "m.jsonl", "--nonmembers", d / "n.jsonl",
        "--attacks", "recall,con_recall:gamma=0.2,pac", "--prefix-texts", d / "p.jsonl",
        "--member-prefix-texts", d / "mp.jsonl", "--recall-shots", 3, "--pac-augmentations", 1,
        "--pac-seed", 7, "--no-cache", "--no-report", "--n-bootstrap", 10, "--out", tmp_path / "r",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert set(res["metrics"]) == {"recall", "con_recall:gamma=0.2", "pac"}
    assert res["config"]["recall_shots"] == 3 and res["config"]["pac_seed"] == 7
    assert "prefix's cache computed once" in res["attacks"]["recall"]["cost"]
    assert any("3 text(s) of the member prefix are also scored" in w for w in res["warnings"])
    assert "member prefix are also scored" in r.stdout + r.stderr
    assert {"nonmember_prefix/target", "member_prefix/target", "pac_augmented/target"} <= set(
        res["scoring"]
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--attacks", "recall", "--prefix-texts", "absent.jsonl"), "no such file or directory"),
        (("--attacks", "recall"), "needs --prefix-texts, which was not given"),
        (("--attacks", "recall", "--prefix-texts", "p.jsonl", "--recall-shots", 50),
         "p.jsonl: 12 text(s) for a non-member prefix of 50 shots"),
        (("--attacks", "dc_pdd"), "needs --token-frequencies or --index"),
        (("--attacks", "dc_pdd", "--token-frequencies", "bad.jsonl"),
         "bad.jsonl:2: 'count' must be an integer >= 0"),
        (("--attacks", "pac", "--pac-augmentations", 0), "--pac-augmentations must be >= 1"),
    ],
)  # fmt: skip
def test_bad_conditional_input_one_line_exit_2_nothing_written(
    flags, message, target_dir, small_sets, tmp_path
):
    d = small_sets
    write_jsonl(d / "bad.jsonl", [{"id": 1, "count": 3}, {"id": 2, "count": -1}])
    flags = tuple(d / f if str(f).endswith(".jsonl") else f for f in flags)
    out = tmp_path / "run"
    r = mia(
        "--model", target_dir, "--members", d / "m.jsonl", "--nonmembers", d / "n.jsonl",
        "--out", out, *flags,
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert not out.exists() or not any(out.iterdir())
