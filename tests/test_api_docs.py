"""docs/api.md's walk-through runs as written: its python blocks, in order, in one namespace, in a
fresh directory (as a reader following along in a notebook would run them).
"""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_walk_through_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMAUDIT_CACHE", str(tmp_path / "cache"))
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 4
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name} block {i + 1}", "exec"), namespace)
    # the walk-through's results are the commands' own run dirs
    assert (tmp_path / "unlearn-eval" / "results.json").is_file()
    assert set(namespace["report"].metrics) == {"original", "npo"}
    assert "<table>" in namespace["audit"]._repr_html_()
    # and equal the command line's: the page's `memaudit mia` gives the first call's scores
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from memaudit.cli.app import app

    args = "mia --model model --members forget.jsonl --nonmembers holdout.jsonl --n-bootstrap 50"
    r = CliRunner().invoke(app, [*args.split(), "--out", "cli-mia"])
    assert r.exit_code == 0, r.output
    cli = pq.read_table(tmp_path / "cli-mia" / "scores.parquet")
    api = pq.read_table(namespace["audit"].path / "scores.parquet")
    assert cli.column_names == api.column_names
    for name in ("loss", "zlib", "min_k", "min_k_pp", "label"):
        assert cli.column(name).to_pylist() == api.column(name).to_pylist()
