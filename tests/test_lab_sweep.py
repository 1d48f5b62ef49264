"""memaudit lab sweep (Hubble's experiments): the quick sweep end to end, each cell's insertions
counted in the batches its model was trained on, dilution, resume, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from memaudit.cli.app import app
from memaudit.io.corpus import load_corpus
from memaudit.lab.canaries import QA, read_ledger
from memaudit.lab.config import QUICK_LAB_SWEEP, LabSweepConfig
from memaudit.lab.insertion import POLICY_RANGE, Schedule, canary_tokens, plan_insertions
from memaudit.lab.lm import EOS, token_stream

runner = CliRunner()


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab-sweep") / "run"
    r = runner.invoke(app, ["lab", "sweep", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out, json.loads((out / "results.json").read_text())


def occurrences(batch: np.ndarray, toks: np.ndarray) -> list[int]:
    """Rows of a (B, T) batch holding ``toks`` contiguously (once per occurrence)."""
    rows = []
    for r, row in enumerate(batch):
        windows = np.lib.stride_tricks.sliding_window_view(row, len(toks))  # (T - n + 1, n)
        rows += [r] * int((windows == toks).all(axis=1).sum())
    return rows


def test_every_cell_trained_on_exactly_the_planned_copies_in_its_phase(quick_sweep):
    from transformers import AutoTokenizer

    out, res = quick_sweep
    config = LabSweepConfig(quick=True).resolved()
    assert [c["label"] for c in res["cells"]] == ["x1-uniform", "x4-uniform", "x1-early", "x1-late"]
    for cell in res["cells"]:
        model_dir = Path(cell["dir"]) / "model"
        tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        ledger = read_ledger(model_dir / "ledger.jsonl")
        members = [c for c in ledger if c.member]
        tokens = canary_tokens(tok, members, tok.convert_tokens_to_ids(EOS))
        steps = config.base_steps * cell["dilution"]
        docs = load_corpus(
            str(out / "corpus.jsonl"), max_chars=config.base_chars * cell["dilution"]
        ).docs
        # the batches training read: the schedule rebuilt from the cell's settings, not the ledger
        plan = plan_insertions(
            ledger,
            tokens,
            steps=steps,
            batch_size=config.batch_size,
            seq_len=config.seq_len,
            seed=config.seed,
        )
        schedule = Schedule(
            token_stream(tok, docs),
            steps=steps,
            batch_size=config.batch_size,
            seq_len=config.seq_len,
            insertions=plan,
            tokens=tokens,
        )
        found: dict[str, set] = {c.id: set() for c in ledger}
        count = dict.fromkeys(found, 0)
        for step in range(steps):
            batch = schedule.batch(step).numpy()
            for c in ledger:
                ids = tok(c.text, verbose=False)["input_ids"]
                rows = occurrences(batch, np.array(ids))
                count[c.id] += len(rows)
                found[c.id] |= {(step, r) for r in rows}
        lo, hi = POLICY_RANGE[cell["phase"]]
        canaries = sorted(c.level for c in ledger if c.template != QA and c.member)
        assert canaries == sorted(k for k in config.repetitions for _ in range(config.per_level))
        items = sorted(c.level for c in ledger if c.template == QA)
        assert items == sorted(k for k in config.copies for _ in range(config.items_per_level))
        assert all(c.member == (c.level > 0) for c in ledger if c.template == QA)
        for c in ledger:
            assert count[c.id] == (c.level if c.member else 0), (cell["label"], c.id)
            assert {(i["step"], i["row"]) for i in c.insertions} == found[c.id]
            for step, row in found[c.id]:
                seq = step * config.batch_size + row
                assert lo * steps * config.batch_size <= seq < hi * steps * config.batch_size
    scores = pq.read_table(out / "scores.parquet").to_pandas()
    per_cell = config.per_level * len(config.repetitions) * 2
    per_cell += config.items_per_level * len(config.copies)
    assert len(scores) == len(res["cells"]) * per_cell
    assert (scores["insertions"] == scores["copies"]).all()
    html = (out / "report.html").read_text()
    assert "Contamination finds the inserted items" in html
    benchmark = [json.loads(line) for line in (out / "benchmark.jsonl").read_text().splitlines()]
    assert sorted(b["copies"] for b in benchmark) == sorted(
        c for c in config.copies for _ in range(config.items_per_level)
    )
    # contamination over the training data flags exactly the items inserted at least once
    inserted = sorted(b["id"] for b in benchmark if b["copies"] > 0)
    found = res["contamination"]
    assert found["found"] == inserted == found["expected_contaminated"]


def test_dilution_multiplies_the_corpus_and_the_steps_not_the_copies(quick_sweep):
    _, res = quick_sweep
    by = {c["label"]: c for c in res["cells"]}
    one, four = by["x1-uniform"], by["x4-uniform"]
    assert one["corpus"]["characters"] == QUICK_LAB_SWEEP["base_chars"]
    assert four["corpus"]["characters"] == 4 * one["corpus"]["characters"]
    assert four["tokens_trained"] == 4 * one["tokens_trained"]
    assert four["insertions"] == one["insertions"]
    for level, r in one["canaries"].items():
        assert four["canaries"][level]["relative_frequency"] == pytest.approx(
            r["relative_frequency"] / 4
        )


def test_a_rerun_trains_no_cell(quick_sweep):
    out, res = quick_sweep
    models = sorted(out.glob("cells/*/model/model.safetensors"))
    assert len(models) == len(res["cells"])
    before = [m.stat().st_mtime_ns for m in models]
    r = runner.invoke(app, ["lab", "sweep", "--quick", "--out", str(out)])
    assert r.exit_code == 0, r.output
    again = json.loads((out / "results.json").read_text())
    assert again["trained_cells"] == 0
    assert [m.stat().st_mtime_ns for m in models] == before
    assert again["findings"] == res["findings"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--copies", "0,4,-1"], "--copies must be >= 0"),
        (["--copies", "4,4"], "--copies names a value twice"),
        (["--phases", "early,sometime"], "unknown phase 'sometime'"),
        (["--dilutions", "1,100000"], "the corpus holds"),
        (["--quick", "--base-steps", "2"], "free slots"),
    ],
)
def test_bad_input_is_one_line_before_any_output(tmp_path, args, message):
    out = tmp_path / "out"
    r = runner.invoke(app, ["lab", "sweep", *args, "--out", str(out)])
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def _cell(dilution, phase, auc, exposure, exact, accuracy):
    """A cell as ``evaluate_cell`` summarises it, at one canary level and items at 0 / 64."""
    return {
        "label": f"x{dilution}-{phase}",
        "dilution": dilution,
        "phase": phase,
        "canaries": {"64": {"auc_loss": auc, "exposure": exposure, "exact": exact}},
        "items": {
            "0": {"accuracy": 0.0, "auc_loss_vs_clean": None},
            "64": {"accuracy": accuracy, "auc_loss_vs_clean": 0.9},
        },
    }


def test_findings_hold_only_when_the_numbers_come_out_that_way():
    from memaudit.lab.sweep import findings

    config = LabSweepConfig(dilutions=(1, 16), phases=("early", "late"), phase_dilution=1)
    falls = [
        _cell(1, "uniform", 1.0, 30.0, 0.9, 1.0),
        _cell(16, "uniform", 0.8, 5.0, 0.0, 0.2),
        _cell(1, "early", 0.6, 3.0, 0.0, 0.0),  # forgotten: not held against the benchmark
        _cell(1, "late", 0.9, 20.0, 0.2, 0.5),
    ]
    got = findings(falls, config)
    assert got["dilution"]["holds"] and got["phase"]["holds"] and got["benchmark"]["holds"]
    rises = [dict(c) for c in falls]
    rises[1] = _cell(16, "uniform", 1.0, 31.0, 0.9, 0.0)  # exposure up, accuracy = clean
    rises[2] = _cell(1, "early", 0.9, 20.0, 0.3, 0.0)  # extraction up
    got = findings(rises, config)
    assert not (got["dilution"]["holds"] or got["phase"]["holds"] or got["benchmark"]["holds"])
