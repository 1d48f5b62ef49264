"""Dataset inference: a real p-value on trained-on texts, and no systematic false positives."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from memaudit.attacks import AttackInputs
from memaudit.cli.app import app
from memaudit.errors import InputError
from memaudit.mia.dataset_inference import (
    MIN_TEXTS,
    false_positive_check,
    features,
    infer,
)
from memaudit.scoring.engine import score_texts


@pytest.fixture(scope="module")
def feature_sets(target, snippets):
    out = {}
    for name in ("members", "nonmembers", "nonmembers2"):
        texts = snippets[name]
        views = dict(
            target=score_texts(target, texts)[0],
            lowercase=score_texts(target, [t.lower() for t in texts])[0],
        )
        out[name], names = features(AttackInputs(texts, **views))
    assert "min_k:k=0.05" in names and "max_k:k=0.6" in names and "lowercase" in names
    return out


def test_training_texts_give_a_small_p_value(feature_sets):
    result = infer(feature_sets["members"], feature_sets["nonmembers"], n_splits=10, seed=0)
    assert result["p_value"] < 0.05


def test_two_unseen_sets_give_no_systematic_false_positives(feature_sets):
    p = [
        infer(feature_sets["nonmembers"], feature_sets["nonmembers2"], n_splits=5, seed=s)[
            "p_value"
        ]
        for s in range(50)
    ]
    assert np.mean(np.array(p) < 0.1) <= 0.2
    check = false_positive_check(feature_sets["nonmembers2"], repeats=20, n_splits=5)
    assert np.mean(np.array(check["p_values"]) < 0.1) <= 0.3


def test_too_few_texts_says_how_many_are_needed(feature_sets):
    with pytest.raises(
        InputError, match=f"suspect set has 5 texts; dataset inference needs at least {MIN_TEXTS}"
    ):
        infer(feature_sets["members"][:5], feature_sets["nonmembers"])


def test_command_writes_verdict_curve_and_check(target_dir, data_files, tmp_path):
    r = CliRunner().invoke(
        app,
        [
            "dataset-inference",
            "--model",
            str(target_dir),
            "--suspect",
            str(data_files["members"]),
            "--validation",
            str(data_files["nonmembers"]),
            "--out",
            str(tmp_path),
            "--false-positive-check",
            "--fp-repeats",
            "10",
            "--splits",
            "5",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["trained_on"] is True and res["p_value"] < 0.05 and "trained on" in r.stdout
    sizes = [c["n_suspect"] for c in res["p_value_curve"]]
    assert (
        sizes[0] == MIN_TEXTS
        and sizes[-1] == 100
        and res["p_value_curve"][-1]["p_value"] < res["p_value_curve"][0]["p_value"]
    )
    assert len(res["false_positive_check"]["p_values"]) == 10
    assert "Verdict" in (tmp_path / "report.html").read_text()
