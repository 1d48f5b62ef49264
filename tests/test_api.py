"""The Python API: the command line's numbers, its errors, in-memory models and texts, the cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import memaudit
from conftest import write_jsonl
from memaudit.cli.app import app

N = 24  # texts per set: enough for a real AUC, quick to score
ATTACKS = "loss,zlib,min_k:k=0.2"


@pytest.fixture(scope="module")
def small_sets(data_files, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api-sets")
    out = {}
    for name in ("members", "nonmembers"):
        rows = Path(data_files[name]).read_text().splitlines()[:N]
        out[name] = write_jsonl(root / f"{name}.jsonl", rows)
    return out


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def cli(*args) -> str:
    """The command line's output (stdout and stderr) and exit code, in-process."""
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def cli_run(target_dir, small_sets, tmp_path_factory):
    out = tmp_path_factory.mktemp("api-cli") / "run"
    code, output = cli(
        *("mia", "--model", target_dir, "--members", small_sets["members"]),
        *("--nonmembers", small_sets["nonmembers"], "--attacks", ATTACKS),
        *("--n-bootstrap", 20, "--out", out, "--cache-dir", out.parent / "cache"),
    )
    assert code == 0, output
    return out


def test_api_and_cli_write_the_same_scores(cli_run, target_dir, small_sets, tmp_path):
    seen = []
    result = memaudit.mia(
        model=target_dir,
        members=small_sets["members"],
        nonmembers=small_sets["nonmembers"],
        attacks=ATTACKS,
        n_bootstrap=20,
        out=tmp_path / "run",
        cache_dir=str(tmp_path / "cache"),  # its own cache: scored here, not read from the CLI's
        progress=lambda stage, done, total, note="": seen.append(stage),
    )
    assert result.results["scoring"]["target"]["forward_passes"] > 0 and seen
    assert pq.read_table(cli_run / "scores.parquet").equals(result.scores_table)
    assert result.metrics == json.loads((cli_run / "results.json").read_text())["metrics"]
    assert result.config.n_bootstrap == 20 and result.config.model == str(target_dir)
    saved = result.save(tmp_path / "copy")
    assert pq.read_table(saved / "scores.parquet").equals(result.scores_table)
    assert (saved / "report.html").is_file() and (saved / "results.json").is_file()


def test_in_memory_model_and_texts_score_as_the_dir_and_files(
    cli_run, target_dir, small_sets, tmp_path
):
    """A transformers model given in memory scores exactly as its dir; texts as a list of dicts
    and a pyarrow Table read as the files; the second call is all from the cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_model = AutoModelForCausalLM.from_pretrained(target_dir)
    tok = AutoTokenizer.from_pretrained(target_dir)
    members = rows_of(small_sets["members"])
    nonmembers = pa.Table.from_pylist(rows_of(small_sets["nonmembers"]))
    runs = [
        memaudit.mia(
            model=hf_model,
            tokenizer=tok,
            members=members,
            nonmembers=nonmembers,
            attacks=ATTACKS,
            n_bootstrap=20,
            cache_dir=str(tmp_path / "cache"),
            report=False,
        )
        for _ in range(2)
    ]
    expected = pq.read_table(cli_run / "scores.parquet")
    for result in runs:
        got = result.scores_table
        assert got.column_names == expected.column_names
        for column in set(expected.column_names) - {"source"}:  # source: a file's path:line
            assert got.column(column).equals(expected.column(column)), column
        assert got.column("source").to_pylist()[0] == "members-0"  # its id: no file to name
    first, second = (r.results["scoring"]["target"] for r in runs)
    assert first["forward_passes"] > 0 and second["forward_passes"] == 0
    assert second["cached_texts"] == 2 * N
    target = runs[0].results["models"]["target"]
    assert target["path"] == "<in-memory model>" and len(target["fingerprint"]) == 16


def test_result_renders_inline_without_network(cli_run, target_dir, small_sets):
    result = memaudit.Result.read("mia", cli_run, None)
    page = result._repr_html_()
    assert "<table>" in page and "loss" in page
    assert '<img src="data:image/png;base64,' in page and "http" not in page.split("<img")[1]


def test_import_memaudit_is_light_and_python_m_memaudit_runs():
    code = (
        "import sys, memaudit; print(sorted(m for m in ('torch', 'transformers', 'matplotlib') "
        "if m in sys.modules)); print(callable(memaudit.mia), callable(memaudit.unlearn))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True True"]
    version = subprocess.run(
        [sys.executable, "-m", "memaudit", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"memaudit {memaudit.__version__}"


def _api_error(call) -> str:
    with pytest.raises(memaudit.MemauditError) as e:
        call()
    return str(e.value)


def test_bad_input_gives_the_command_lines_one_line_error(target_dir, small_sets, tmp_path):
    sets = ("--members", small_sets["members"], "--nonmembers", small_sets["nonmembers"])
    base = dict(
        model=target_dir, members=small_sets["members"], nonmembers=small_sets["nonmembers"]
    )
    cases = [
        # (API call, the same thing on the command line)
        (
            lambda: memaudit.mia(model=target_dir, members="nope.jsonl", nonmembers="x.jsonl"),
            ("mia", "--model", target_dir, "--members", "nope.jsonl", "--nonmembers", "x.jsonl"),
        ),
        (
            lambda: memaudit.mia(**base, attacks="los"),
            ("mia", "--model", target_dir, *sets, "--attacks", "los"),
        ),
        (
            lambda: memaudit.mia(**base, n_bootstrap=0),
            ("mia", "--model", target_dir, *sets, "--n-bootstrap", "0"),
        ),
        (
            lambda: memaudit.mia(**base, max_tokens_per_text=1),
            ("mia", "--model", target_dir, *sets, "--max-tokens-per-text", "1"),
        ),
        (
            lambda: memaudit.extract(model=target_dir, data="nope.jsonl", out=tmp_path / "e"),
            ("extract", "--model", target_dir, "--data", "nope.jsonl", "--out", tmp_path / "e"),
        ),
        (
            lambda: memaudit.dataset_inference(
                model=target_dir, suspect="nope.jsonl", validation=small_sets["nonmembers"]
            ),
            ("dataset-inference", "--model", target_dir, "--suspect", "nope.jsonl",
             "--validation", small_sets["nonmembers"]),
        ),
        (
            lambda: memaudit.overlap(model=target_dir, index="noindex", prompts="nope.jsonl"),
            ("overlap", "--model", target_dir, "--index", "noindex", "--prompts", "nope.jsonl"),
        ),
        (
            lambda: memaudit.unlearn(model=target_dir, forget="nope.jsonl", out=tmp_path / "u"),
            ("unlearn", "--model", target_dir, "--forget", "nope.jsonl", "--out", tmp_path / "u"),
        ),
        (
            lambda: memaudit.unlearn_eval(
                original=target_dir, forget="nope.jsonl", holdout="h.jsonl", retain="stdlib"
            ),
            ("unlearn-eval", "--original", target_dir, "--forget", "nope.jsonl",
             "--holdout", "h.jsonl", "--retain", "stdlib"),
        ),
        (
            lambda: memaudit.train(corpus="nope.jsonl", out=tmp_path / "t"),
            ("train", "--corpus", "nope.jsonl", "--out", tmp_path / "t"),
        ),
        (
            lambda: memaudit.train(corpus="stdlib", model_size="huge", out=tmp_path / "t"),
            ("train", "--corpus", "stdlib", "--model-size", "huge", "--out", tmp_path / "t"),
        ),
        (
            lambda: memaudit.index_build(
                corpus="nope.jsonl", tokenizer=target_dir, out=tmp_path / "i"
            ),
            ("index", "build", "nope.jsonl", "--tokenizer", target_dir,
             "--out", tmp_path / "i"),
        ),
    ]  # fmt: skip
    for call, args in cases:
        message = _api_error(call)
        assert "\n" not in message
        code, output = cli(*args)
        assert code == 2 and f"error: {message}" in output.replace("\n", ""), (message, output)


def test_in_memory_texts_are_checked_as_files_are(target_dir, small_sets):
    members = [*rows_of(small_sets["members"])[:3], {"txt": "no text field"}]
    message = _api_error(
        lambda: memaudit.mia(model=target_dir, members=members, nonmembers=small_sets["nonmembers"])
    )
    assert message == "members[3]: missing 'text' field"
    bad_file = write_jsonl(small_sets["members"].parent / "bad.jsonl", members)
    code, output = cli(
        "mia",
        "--model",
        target_dir,
        "--members",
        bad_file,
        "--nonmembers",
        small_sets["nonmembers"],
    )
    assert code == 2 and f"error: {bad_file}:4: missing 'text' field" in output
    for given, expected in (
        ([1, 2], "members[0]: expected a string or a dict with a 'text' field, got int"),
        (3.5, "members: expected a path, a list of strings or dicts, a pandas DataFrame or a "
              "pyarrow Table; got float"),
    ):  # fmt: skip
        got = _api_error(
            lambda g=given: memaudit.mia(model=target_dir, members=g, nonmembers=["a b c"])
        )
        assert got == expected
    assert "did you mean 'n_bootstrap'" in _api_error(
        lambda: memaudit.mia(model=target_dir, members=["a"], nonmembers=["b"], n_bootstrp=5)
    )
    assert "needs its tokenizer" in _api_error(
        lambda: memaudit.mia(model=object(), members=["a"], nonmembers=["b"])
    )


def test_a_pandas_dataframe_is_a_table_of_texts(target_dir, small_sets, tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(rows_of(small_sets["members"]))
    result = memaudit.extract(
        model=target_dir, data=frame, prefix_tokens=8, suffix_tokens=8, out=tmp_path / "x"
    )
    assert len(result.scores) == N and list(result.scores["id"])[:1] == ["members-0"]
