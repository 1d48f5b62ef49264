"""No command removes a directory or file memaudit did not create; --out is checked first."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from memaudit.cli.app import app
from memaudit.errors import InputError
from memaudit.io.outdir import made_by_memaudit, prepare_out_dir
from memaudit.io.rundir import RunDir
from memaudit.lab.lm import save_model_dir
from memaudit.models import load_causal_lm

runner = CliRunner()


@pytest.fixture()
def runs(tmp_path, target_dir, snippets):
    """runs/m: a model; runs/notes.txt: a user's file; f.jsonl: a forget set."""
    root = tmp_path / "runs"
    shutil.copytree(target_dir, root / "m")
    (root / "notes.txt").write_text("my notes")
    forget = tmp_path / "f.jsonl"
    forget.write_text("".join(json.dumps({"text": t}) + "\n" for t in snippets["members"][:4]))
    return root, forget


def unlearn(model, forget, out, *extra):
    args = ["unlearn", "--model", str(model), "--forget", str(forget), "--method", "ga"]
    return runner.invoke(
        app, [*args, "--steps", "1", "--batch-size", "2", "--out", str(out), *extra]
    )


def untouched(root):
    assert (root / "notes.txt").read_text() == "my notes"
    assert load_causal_lm(root / "m").fingerprint


def test_unlearn_into_the_parent_of_its_model_is_refused(runs):
    """The reproduced data loss: `--out runs` removed runs/, the model and the notes with it."""
    root, forget = runs
    r = unlearn(root / "m", forget, root)
    assert r.exit_code == 2 and "must not be or contain the input" in r.stderr, r.output
    untouched(root)
    r = unlearn(root / "m", forget, root, "--overwrite")  # not even with --overwrite
    assert r.exit_code == 2
    untouched(root)


def test_unrelated_directory_needs_overwrite_and_keeps_its_files(runs, tmp_path):
    root, forget = runs
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("keep")
    r = unlearn(root / "m", forget, other)
    assert r.exit_code == 2 and "holds files memaudit did not write" in r.stderr
    assert sorted(p.name for p in other.iterdir()) == ["keep.txt"]
    r = unlearn(root / "m", forget, other, "--overwrite")
    assert r.exit_code == 0, r.output
    assert (other / "keep.txt").read_text() == "keep"  # written into, nothing of it deleted
    assert load_causal_lm(other).fingerprint and not made_by_memaudit(other, "model:unlearn")
    r = unlearn(root / "m", forget, other)  # memaudit wrote there, but it is still not its dir
    assert r.exit_code == 2 and (other / "keep.txt").read_text() == "keep"


def test_an_existing_file_and_the_model_itself_are_refused(runs, tmp_path):
    root, forget = runs
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    r = unlearn(root / "m", forget, a_file)
    assert r.exit_code == 2 and "existing file" in r.stderr and a_file.read_text() == "x"
    r = unlearn(root / "m", forget, root / "m")
    assert r.exit_code == 2
    untouched(root)


def test_a_rerun_replaces_only_its_own_output(runs, tmp_path):
    root, forget = runs
    out = tmp_path / "u"
    assert unlearn(root / "m", forget, out, "--steps", "3", "--save-every", "1").exit_code == 0
    # steps 1 and 2 are checkpoints; the final step is the model itself
    assert sorted(p.name for p in out.glob("step-*")) == ["step-00001", "step-00002"]
    assert made_by_memaudit(out, "model:unlearn")
    # a later run into the same dir: the earlier run's checkpoints never enter its curve
    assert unlearn(root / "m", forget, out, "--steps", "2", "--save-every", "1").exit_code == 0
    assert sorted(p.name for p in out.glob("step-*")) == ["step-00001"]


def test_save_model_dir_never_deletes_a_foreign_directory(target, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    save_model_dir(target.model, target.tokenizer, out)
    assert (out / "thesis.tex").read_text() == "years of work"
    assert load_causal_lm(out).fingerprint == target.fingerprint


def test_run_dirs(tmp_path):
    prepare_out_dir(tmp_path / "new", kind="run:mia")
    assert made_by_memaudit(tmp_path / "new", "run:mia")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.csv").write_text("a,b")
    with pytest.raises(InputError, match="did not write"):
        RunDir.begin(foreign, "mia", {"out": str(foreign)})
    RunDir.begin(foreign, "mia", {"out": str(foreign), "overwrite": True}).finish({"x": 1})
    assert (foreign / "results.csv").read_text() == "a,b" and (foreign / "results.json").is_file()
    legacy = tmp_path / "legacy"  # a run dir of a version without markers
    legacy.mkdir()
    (legacy / "results.json").write_text('{"config": {}}')
    RunDir.begin(legacy, "mia", {})
    data = tmp_path / "data"
    data.mkdir()
    (data / "members.jsonl").write_text("{}")
    with pytest.raises(InputError, match="must not be or contain the input"):
        RunDir.begin(tmp_path, "mia", {"members": str(data / "members.jsonl")})


def test_train_and_index_refuse_a_foreign_directory(tmp_path, target_dir):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("keep")
    r = runner.invoke(app, ["train", "--out", str(foreign), "--steps", "1"])
    assert r.exit_code == 2 and "did not write" in r.stderr
    r = runner.invoke(
        app, ["index", "build", "stdlib", "--tokenizer", str(target_dir), "--out", str(foreign)]
    )
    assert r.exit_code == 2 and "did not write" in r.stderr
    r = runner.invoke(app, ["diffusion", "train", "--out", str(foreign), "--steps", "1"])
    assert r.exit_code == 2 and "did not write" in r.stderr
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]


def test_a_finished_run_of_other_settings_is_never_replaced_silently(tmp_path):
    def run(settings, answer):
        begun = RunDir.begin(tmp_path / "r", "mia", settings)
        begun.finish({**begun.header(), "x": answer})

    run({"seed": 0, "attacks": ("loss",)}, 1)
    run({"seed": 0, "attacks": ("loss",)}, 2)  # the same settings: replaced
    with pytest.raises(InputError, match="finished mia run with other settings"):
        RunDir.begin(tmp_path / "r", "mia", {"seed": 1, "attacks": ("loss",)})
    assert json.loads((tmp_path / "r" / "results.json").read_text())["x"] == 2
    RunDir.begin(tmp_path / "r", "mia", {"seed": 1, "overwrite": True})
    assert not (tmp_path / "r" / "results.json").exists()


def test_extract_with_its_default_out_keeps_the_earlier_run(tmp_path, monkeypatch, target_dir):
    monkeypatch.chdir(tmp_path)
    texts = tmp_path / "t.jsonl"
    texts.write_text("".join(json.dumps({"text": "def f(x):\n    return x + 1\n" * 4}) + "\n"))
    args = ["extract", "--model", str(target_dir), "--data", str(texts), "--no-report"]
    assert runner.invoke(app, [*args, "-k", "4", "-m", "4"]).exit_code == 0
    first = (tmp_path / "runs" / "extract" / "results.json").read_text()
    r = runner.invoke(app, [*args, "-k", "4", "-m", "8"])
    assert r.exit_code == 2 and "finished extract run with other settings" in r.stderr
    assert (tmp_path / "runs" / "extract" / "results.json").read_text() == first


def test_a_device_this_machine_lacks_and_a_ledger_not_in_utf8_fail_first(tmp_path):
    import torch

    if not torch.cuda.is_available():
        r = runner.invoke(app, ["train", "--out", str(tmp_path / "m"), "--device", "cuda"])
        assert r.exit_code == 2 and "device 'cuda' is not available" in r.stderr
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "m"), "--device", "cuda:x"])
    assert r.exit_code == 2 and "unknown device 'cuda:x'" in r.stderr
    assert not (tmp_path / "m").exists()
    ledger = tmp_path / "l.jsonl"
    from memaudit.lab.canaries import make_canaries

    good = make_canaries(repetitions=(1,), per_level=1)[0].to_json().encode()
    ledger.write_bytes(good + b'\n{"id": "caf\xe9"}\n')
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "m"), "--ledger", str(ledger)])
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {ledger}:2: not UTF-8 text (byte 12 of the line)"
    ]


def test_where_a_run_writes_or_caches_is_no_other_setting(tmp_path):
    first = RunDir.begin(tmp_path / "r", "mia", {"seed": 0, "out": "runs/r", "cache_dir": None})
    first.finish({**first.header(), "x": 1})
    again = {"seed": 0, "out": "runs/r/", "cache_dir": "/elsewhere", "device": "cpu"}
    RunDir.begin(tmp_path / "r", "mia", again)  # the same run, written and cached elsewhere


def test_overwrite_never_replaces_a_users_file_of_an_output_name(runs, tmp_path):
    """--overwrite lets memaudit into a user's directory, never over what was there first."""
    root, forget = runs
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("my config")
    (other / "notes.md").write_text("mine")
    r = unlearn(root / "m", forget, other, "--overwrite")
    assert r.exit_code == 2, r.output
    assert "--overwrite would replace config.json, which memaudit did not write" in r.stderr
    assert sorted(p.name for p in other.iterdir()) == ["config.json", "notes.md"]  # before work
    # a run dir: its results.json would be retired at the start, its report replaced
    (other / "config.json").unlink()
    (other / "report.html").write_text("my report")
    with pytest.raises(InputError, match="would replace report.html"):
        RunDir.begin(other, "mia", {"out": str(other), "overwrite": True})
    # what was there first stays out of reach on every later run, too
    (other / "report.html").unlink()
    RunDir.begin(other, "mia", {"out": str(other), "overwrite": True}).finish({"x": 1})
    (other / "scores.parquet").write_text("added later by the user, after memaudit came in")
    RunDir.begin(other, "mia", {"out": str(other), "overwrite": True}).finish({"x": 2})
    assert (other / "notes.md").read_text() == "mine"
    marker = json.loads((other / ".memaudit.json").read_text())
    assert marker["owned"] is False and marker["preexisting"] == ["notes.md"]


def test_shadows_overwrite_keeps_a_users_model_folder(tmp_path, data_files, target_dir):
    """`shadows train` clears its own model-* folders on a rerun: never a user's."""
    other = tmp_path / "other"
    (other / "model-final").mkdir(parents=True)
    (other / "model-final" / "weights.bin").write_text("mine")
    args = ["shadows", "train", "--pool", str(data_files["members"]), "--tokenizer"]
    r = runner.invoke(app, [*args, str(target_dir), "--out", str(other), "--overwrite"])
    assert r.exit_code == 2 and "would replace model-final" in r.stderr, r.output
    assert (other / "model-final" / "weights.bin").read_text() == "mine"


def test_another_memaudit_kind_is_named_in_the_refusal(tmp_path):
    RunDir.begin(tmp_path / "r", "mia", {}).finish({"x": 1})
    with pytest.raises(InputError, match="holds a memaudit run:mia output, not this command's"):
        prepare_out_dir(tmp_path / "r", kind="model:unlearn")


def test_every_output_name_is_declared(runs, tmp_path, target_dir, shadows_dir, quick_demo):
    """OUTPUT_NAMES must cover what each kind writes, or --overwrite could replace a user's file."""
    from fnmatch import fnmatchcase

    from memaudit.io.outdir import MARKER, output_names

    root, forget = runs
    demo, _ = quick_demo
    assert (
        unlearn(root / "m", forget, tmp_path / "u", "--steps", "2", "--save-every", "1").exit_code
        == 0
    )
    args = ["index", "build", str(forget), "--tokenizer", str(target_dir), "--out"]
    assert runner.invoke(app, [*args, str(tmp_path / "idx")]).exit_code == 0
    mia = ["mia", "--model", str(target_dir), "--members", str(forget), "--nonmembers"]
    mia += [str(forget), "--attacks", "loss", "--n-bootstrap", "2", "--out", str(tmp_path / "r")]
    assert runner.invoke(app, mia).exit_code == 0
    outputs = {
        "model:train": [target_dir, demo / "model"],
        "model:unlearn": [tmp_path / "u"],
        "index": [tmp_path / "idx"],
        "shadows": [shadows_dir],
        "run:demo": [demo],
        "run:mia": [tmp_path / "r"],
    }
    for kind, dirs in outputs.items():
        for d in dirs:
            for p in d.iterdir():
                declared = any(fnmatchcase(p.name, pat) for pat in output_names(kind))
                assert p.name == MARKER or declared, (kind, p)
