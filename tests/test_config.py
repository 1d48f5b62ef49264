"""One configuration mechanism for every command: defaults <- --config file <- flags, typed the
same way.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields

import pytest
import typer
from typer.testing import CliRunner

from memaudit.cli.app import app
from memaudit.errors import InputError
from memaudit.io.config import resolve_config
from memaudit.lab.canaries import read_ledger
from memaudit.lab.train import TrainConfig

runner = CliRunner()
NO_SETTINGS = {"attacks"}  # lists the registry; nothing to configure


def leaf_commands(group, path=()):
    if hasattr(group, "commands"):
        for name, sub in group.commands.items():
            yield from leaf_commands(sub, (*path, name))
    else:
        yield path, group


def test_every_command_takes_a_config_file_and_documents_every_flag():
    commands = list(leaf_commands(typer.main.get_command(app)))
    assert len(commands) > 30
    for path, command in commands:
        if path[-1] in NO_SETTINGS:
            continue
        names = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert "--config" in names, f"memaudit {' '.join(path)} has no --config"
        for p in command.params:
            assert p.help, f"memaudit {' '.join(path)}: {p.name} has no help"


def test_help_shows_the_defaults_of_the_config_class():
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for f in fields(TrainConfig):
        if f.default not in (MISSING, None) and not isinstance(f.default, bool):
            assert f"default: {f.default}" in r.output, f.name
    assert "required" in r.output  # --out


def test_file_then_flags(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"steps": 5, "lr": 0.01, "out": "a"}))
    c = resolve_config(TrainConfig, config_file=str(cfg), steps=7, lr=None)
    assert (c.steps, c.lr, c.out, c.batch_size) == (7, 0.01, "a", 16)


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("trust_remote_code", "false", "must be true or false, got 'false'"),
        ("max_length", "abc", "must be an integer, got 'abc'"),
        ("n_bootstrap", 1.5, "must be an integer, got 1.5"),
        ("attacks", 3, "must be a string, got 3"),
    ],
)
def test_config_file_values_are_typed_like_flags(tmp_path, setting, value, message):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({setting: value}))
    r = runner.invoke(
        app, ["mia", "--model", "m", "--members", "a", "--nonmembers", "b", "--config", str(cfg)]
    )
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and f"setting '{setting}' in {cfg}" in lines[0] and message in lines[0]
    ), r.stderr


def test_comma_lists_from_flags_and_lists_from_files(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('repetitions = [1, 4]\nper_level = 1\ntemplates = ["card"]\n')
    out = tmp_path / "ledger.jsonl"
    r = runner.invoke(app, ["canaries", "make", "--config", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    made = read_ledger(out)
    assert sorted(c.level for c in made if c.member) == [1, 4] and {c.template for c in made} == {
        "card"
    }
    r = runner.invoke(
        app, ["canaries", "make", "--repetitions", "2,8", "--per-level", "1", "--out", str(out)]
    )
    assert r.exit_code == 0 and sorted(c.level for c in read_ledger(out) if c.member) == [2, 8]
    r = runner.invoke(app, ["canaries", "make", "--repetitions", "2,x", "--out", str(out)])
    assert (
        r.exit_code == 2 and "--repetitions must be a comma list of integers, got '2,x'" in r.stderr
    )


def test_missing_required_settings_name_their_flags():
    with pytest.raises(InputError, match="missing required setting"):
        resolve_config(TrainConfig)
    r = runner.invoke(app, ["train"])
    assert r.exit_code == 2 and "--out" in r.stderr


def test_zero_bootstrap_rounds_are_refused_not_shown_as_a_zero_width_ci(tmp_path):
    from memaudit.metrics import membership_metrics

    with pytest.raises(ValueError, match="n_bootstrap"):
        membership_metrics([1.0, 0.0], [1, 0], n_bootstrap=0)
    base = ["--model", "m", "--members", "a", "--nonmembers", "b"]
    r = runner.invoke(app, ["mia", *base, "--n-bootstrap", "0"])
    assert r.exit_code == 2 and "--n-bootstrap must be >= 1, got 0" in r.stderr
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"n_bootstrap": 0}))
    r = runner.invoke(
        app, ["overlap", "--model", "m", "--index", "i", "--prompts", "p", "--config", str(cfg)]
    )
    assert r.exit_code == 2 and f"setting 'n_bootstrap' in {cfg} must be >= 1" in r.stderr


def test_empty_lists_are_one_line_errors(tmp_path):
    out = str(tmp_path / "l.jsonl")
    for flag in ("--templates", "--repetitions"):
        r = runner.invoke(app, ["canaries", "make", flag, ",", "--out", out])
        assert r.exit_code == 2 and f"{flag} is empty" in r.stderr, r.output


def test_config_file_keys_are_the_flags_names_too(tmp_path):
    from memaudit.mia.config import DatasetInferenceConfig, MiaConfig

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"splits": 20, "no_report": True}))
    c = resolve_config(
        DatasetInferenceConfig, config_file=str(cfg), model="m", suspect="s", validation="v"
    )
    assert (c.n_splits, c.report) == (20, False)
    cfg.write_text(json.dumps({"n_bootstrap": 50, "report": False}))
    c = resolve_config(MiaConfig, config_file=str(cfg), model="m", members="a", nonmembers="b")
    assert (c.n_bootstrap, c.report) == (50, False)


def test_progress_is_written_as_lines_when_stderr_is_not_a_terminal(capsys):
    from memaudit.cli.common import StageBars

    with StageBars() as bars:
        assert bars.plain  # pytest captures stderr: no terminal
        for done in range(11):
            bars("scoring target", done, 10, "half" if done == 5 else "")
        bars("generating", 3, None)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["scoring target: 0/10", "scoring target: 10/10", "generating: 3"]
