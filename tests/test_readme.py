"""Every command block of the README runs as written, at small sizes, on a fresh directory.

The blocks are read from README.md itself, in order, into one working directory (later
blocks use what earlier ones made, as a reader following along would). Each ``memaudit``
command runs in-process with a few flags *appended* that shrink the work (a flag given
twice takes its last value), so the command line as written must parse and its inputs
must exist; only sizes change. ``make`` targets and the GPU check are what CI and the
device script run themselves, and are listed in ``NOT_RUN_HERE``. ``memaudit demo`` (run with
``--quick``) is the session's one quick demo, which test_demo reads too.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memaudit.cli.app import app

README = Path(__file__).resolve().parents[1] / "README.md"

# command -> flags appended to shrink it (the longest matching name wins)
SMALL = {
    "train": [
        *("--steps", "60", "--model-size", "micro", "--corpus-chars", "40000"),
        *("--checkpoint-every", "0"),
    ],
    "demo": ["--quick"],
    "canaries make": [],
    "extract": ["--batch-size", "16"],
    "mia": ["--n-bootstrap", "20"],
    # the shadow-model example: a tenth of its texts, 2 shadows of 10 steps
    "corpus snippets --n 1000": ["--n", "100"],
    "corpus snippets --n 2000": ["--n", "200"],
    "corpus snippets --n 500": ["--n", "50"],
    "shadows train": ["--steps", "10", "--n-models", "2", "--checkpoint-every", "0"],
    "traps make": ["--lengths", "20", "--per-bucket", "2"],
    "traps inject": ["--corpus-chars", "150000"],
    "overlap": ["--max-new-tokens", "16", "--n-bootstrap", "20"],
    "unlearn": ["--steps", "2", "--retain-chars", "20000", "--kfac-batches", "2"],
    "unlearn-eval": ["--eval-texts", "20", "--n-bootstrap", "20", "--relearn-steps", "1"],
    # the edits next to unlearning: the quantization attack is the first evaluation's
    "unlearn-eval --original runs/demo/model --unlearned runs/edit-secrets-memit": [
        *("--eval-texts", "20", "--n-bootstrap", "20", "--relearn-steps", "1"),
        *("--quant-bits", "none"),
    ],
    "probe kk run": ["--n-bootstrap", "20"],
    "lab sweep": ["--quick"],
    "edit-facts": ["--subjects", "10", "--edits", "8", "--controls", "4", "--copies", "10"],
    "edit": ["--covariance-tokens", "3000"],
    "edit-eval": ["--general-texts", "8", "--n-bootstrap", "20"],
    "edit-sweep": [
        *("--batch-sizes", "1,4", "--edits-per-size", "4", "--covariance-tokens", "3000"),
        *("--general-texts", "8", "--n-bootstrap", "20"),
    ],
    "probe retention": ["--steps-list", "0,1,2"],
    "probe recall": ["--n", "2"],
    "probe recall-train": ["--steps", "2"],
    "probe recall-sweep": ["--quick", "--steps", "2", "--n", "4", "--workers", "1"],
    "diffusion emm": [
        *("--sizes", "10,20", "--steps", "2", "--checkpoints", "1"),
        *("--samples", "8", "--sampling-steps", "2", "--workers", "1"),
    ],
    "diffusion train": ["--steps", "2"],
    "diffusion memorization": ["--samples", "8", "--sampling-steps", "2"],
    "diffusion detect": ["--noises", "1", "--n-bootstrap", "20"],
    "dataset-inference": ["--fp-repeats", "2"],
}
NOT_RUN_HERE = {
    "make": "Makefile targets: CI runs `make lint` and `make test` itself",
    "python benchmarks/check_device.py": "needs a GPU (benchmarks/gpu_suite.sh runs it)",
}


def blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """One shell command per entry: continuations joined, comments dropped, ``for`` loops
    unrolled (``for v in a b; do ... $v ... done``, the only shell the README uses).
    """
    lines, current = [], ""
    for raw in block.splitlines():
        line = _without_comment(raw).rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            lines.append(" ".join(current.split()))
        current = ""
    out, i = [], 0
    while i < len(lines):
        loop = re.fullmatch(r"for (\w+) in (.+); do", lines[i])
        if loop is None:
            out.append(lines[i])
            i += 1
            continue
        end = lines.index("done", i)
        for value in loop.group(2).split():
            out += [line.replace(f"${loop.group(1)}", value) for line in lines[i + 1 : end]]
        i = end + 1
    return out


def _without_comment(line: str) -> str:
    """The line before a `#` that starts a comment (not one inside quotes)."""
    quote = None
    for j, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (j == 0 or line[j - 1].isspace()):
            return line[:j]
    return line


def small(args: list[str]) -> list[str]:
    named = [name for name in SMALL if args[: len(name.split())] == name.split()]
    name = max(named, key=len, default=None)
    return args + SMALL[name] if name else args  # the rest are small already


def test_the_readme_parser_reads_continuations_comments_and_loops():
    block = 'a --x 1 \\\n  --y "#2"   # note\nfor m in p q; do\n  b --m $m\ndone\n'
    assert commands(block) == ['a --x 1 --y "#2"', "b --m p", "b --m q"]


def test_every_readme_command_block_runs_as_written(tmp_path, monkeypatch, quick_demo):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    ran = 0
    for block in blocks(README.read_text()):
        for line in commands(block):
            if any(line.startswith(prefix) for prefix in NOT_RUN_HERE):
                continue
            args = shlex.split(line)
            assert args[0] == "memaudit", f"README command is not memaudit's: {line}"
            if small(args[1:]) == ["demo", "--quick"]:
                # the session's one `memaudit demo --quick` (test_demo reads it too), where
                # the README's default --out puts it
                shutil.copytree(quick_demo[0], Path("runs/demo"))
                ran += 1
                continue
            r = runner.invoke(app, small(args[1:]))
            assert r.exit_code == 0, f"README: `{line}` failed:\n{r.output}"
            ran += 1
    assert ran >= 40  # the README's commands, not a parser that found none


@pytest.mark.parametrize("prefix", sorted(NOT_RUN_HERE))
def test_what_is_not_run_here_is_in_the_readme(prefix):
    assert any(line.startswith(prefix) for b in blocks(README.read_text()) for line in commands(b))
