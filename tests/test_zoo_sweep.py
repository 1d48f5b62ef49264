"""``probe recall-sweep`` and ``probe recall-train --arch <zoo mixer>``: real trainings of tiny zoo
models on MQAR, checked against the models' own forward passes.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from memaudit.cli.app import app

runner = CliRunner()


def without_run_flags(cells: list[dict]) -> list[dict]:
    """A cell's result minus whether this run trained or evaluated it."""
    return [{k: v for k, v in c.items() if k not in ("trained", "evaluated")} for c in cells]


@pytest.fixture(scope="session")
def quick_sweep(tmp_path_factory):
    """The --quick sweep, run once through the CLI in two worker processes."""
    out = tmp_path_factory.mktemp("sweep") / "run"
    r = runner.invoke(
        app, ["probe", "recall-sweep", "--quick", "--workers", "2", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    return out, json.loads((out / "results.json").read_text())


def test_quick_sweep_attention_recalls_more_than_linear_attention(quick_sweep):
    _, res = quick_sweep
    cells = {c["arch"]: c for c in res["cells"]}
    att, lin = cells["attention"], cells["linear_attention"]
    assert att["mean_accuracy"] > 0.8 and att["mean_accuracy"] > lin["mean_accuracy"] + 0.3, (
        att["grid"],
        lin["grid"],
    )


def test_quick_sweep_cells_are_the_models_own_predictions(quick_sweep):
    from memaudit.probes.recall import MQAR, mqar_cell_seed
    from memaudit.probes.zoo import load_zoo_model

    out, res = quick_sweep
    cells = {c["arch"]: c for c in res["cells"]}
    assert set(cells) == {"attention", "linear_attention"} and res["trained_cells"] == 2
    att, lin = cells["attention"], cells["linear_attention"]
    assert att["d_model"] == lin["d_model"] == min(c["d_model"] for c in res["cells"])
    ev, tr = res["recipe"]["eval"], res["recipe"]["train"]
    for c in (att, lin):  # each grid cell: the saved model's own argmax at the query keys
        model = load_zoo_model(f"{c['dir']}/model").eval()
        for L in ev["lengths"]:
            for D in ev["pairs"]:
                task = MQAR(tr["vocab"], L, D, layout=tr["layout"], alpha=tr["alpha"])
                ids, targets = task.batch(ev["n"], mqar_cell_seed(ev["seed"], L, D))
                with torch.no_grad():
                    pred = model(torch.as_tensor(ids)).argmax(-1).numpy()
                asked = targets >= 0
                assert c["grid"][f"{L}x{D}"] == pytest.approx(
                    float(np.mean(pred[asked] == targets[asked]))
                )
        assert c["state_floats"] == {str(L): model.state_floats(L) for L in ev["lengths"]}
    d, layers = att["d_model"], tr["n_layers"]  # the KV cache grows by 2 d floats a token a layer
    assert att["state_floats"]["64"] - att["state_floats"]["32"] == 2 * 32 * d * layers
    assert lin["state_floats"]["64"] == lin["state_floats"]["32"]  # a fixed-size state
    assert (out / "report.html").is_file() and (out / "scores.parquet").is_file()


def test_a_rerun_trains_nothing_and_a_lost_cell_retrains_to_the_same_numbers(quick_sweep, tmp_path):
    from memaudit.probes.config import RecallSweepConfig
    from memaudit.probes.sweep import run_sweep

    first, res = quick_sweep
    out = tmp_path / "run"
    shutil.copytree(first, out)
    config = RecallSweepConfig(quick=True, workers=1, out=str(out))
    _, again = run_sweep(config)
    assert again["trained_cells"] == 0
    assert without_run_flags(again["cells"]) == without_run_flags(res["cells"])
    lost = next(c for c in again["cells"] if c["arch"] == "linear_attention")
    cell = out / "cells" / lost["dir"].rsplit("/", 1)[-1]
    for f in cell.iterdir():  # as if killed mid-training: no model, no evaluation
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    _, resumed = run_sweep(config)  # here, in this process: one worker
    assert resumed["trained_cells"] == 1
    assert [c["trained"] for c in resumed["cells"]] == [c is lost for c in again["cells"]]
    assert [numbers(c) for c in resumed["cells"]] == [numbers(c) for c in res["cells"]]


def numbers(cell: dict) -> tuple:
    """What a cell measured and trained, without its timings: a retraining must repeat it."""
    t = cell["training"]
    return (
        cell["label"],
        cell["grid"],
        cell["state_floats"],
        cell["fingerprint"],
        t["tokens"],
        t["final_loss"],
    )


def test_recall_train_with_a_zoo_arch_writes_a_dir_probe_recall_evaluates(tmp_path):
    from memaudit.probes.recall import MQAR, mqar_cell_seed
    from memaudit.probes.zoo import load_zoo_model

    model_dir, run = tmp_path / "m", tmp_path / "r"
    r = runner.invoke(
        app,
        ["probe", "recall-train", "--arch", "attention", "--d-model", "16", "--steps", "20"]
        + ["--out", str(model_dir)],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        ["probe", "recall", "--model", str(model_dir), "--lengths", "32,64", "--pairs", "4"]
        + ["--n", "8", "--out", str(run)],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((run / "results.json").read_text())
    assert res["trained_on"]["arch"] == "attention" and res["mqar_vocab"] == 64
    assert res["models"]["target"]["arch"] == "attention"
    model = load_zoo_model(model_dir).eval()
    for L in (32, 64):
        ids, targets = MQAR(64, L, 4).batch(8, mqar_cell_seed(0, L, 4))
        with torch.no_grad():
            pred = model(torch.as_tensor(ids)).argmax(-1).numpy()
        asked = targets >= 0
        assert res["grid"][f"{L}x4"] == pytest.approx(float(np.mean(pred[asked] == targets[asked])))


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["recall-sweep", "--archs", "attention,linaer_attention"],
            "did you mean 'linear_attention'",
        ),
        (["recall-sweep", "--archs", "attention", "--states", "attention=8"], "attention"),
        (["recall-sweep", "--states", "gla=x"], "is not ARCH=S"),
        (["recall-sweep", "--lengths", "16", "--pairs", "8"], "no (length, pairs)"),
        (["recall-train", "--arch", "atention"], "did you mean 'attention'"),
        (["recall-train", "--arch", "attention", "--state", "8"], "attention"),
        (["recall-train", "--arch", "llama", "--d-model", "32"], "are for zoo archs"),
    ],
)
def test_bad_zoo_input_is_one_line_before_any_output(tmp_path, args, message):
    out = tmp_path / "out"
    r = runner.invoke(app, ["probe", *args, "--out", str(out)])
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()
