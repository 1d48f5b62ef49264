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


NULL_RUNS = 200


@pytest.fixture(scope="module")
def null_runs():
    """200 independent null runs: suspect and validation are two samples of one distribution."""
    rng = np.random.default_rng(123)
    out = []
    for s in range(NULL_RUNS):
        mean = rng.normal(size=6)
        a, b = rng.normal(mean, 1.0, (40, 6)), rng.normal(mean, 1.0, (40, 6))
        out.append(infer(a, b, n_splits=10, seed=s))
    return out


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_p_values_are_calibrated_under_the_null(null_runs, alpha):
    """p < alpha at most alpha of the time, up to Monte-Carlo error (a valid combination may be
    conservative, never liberal)."""
    rate = np.mean([r["p_value"] < alpha for r in null_runs])
    assert rate <= alpha + 2.5 * np.sqrt(alpha * (1 - alpha) / NULL_RUNS), rate


def test_the_combined_p_value_is_twice_the_median_and_never_below_it(null_runs):
    for r in null_runs:
        assert r["p_value"] == pytest.approx(min(1.0, 2 * np.median(r["split_p_values"])))
        assert r["p_value"] >= r["median_split_p_value"]


def test_outliers_are_clipped_as_in_the_reference_code():
    from memaudit.mia.dataset_inference import clip_outliers

    x = np.arange(200, dtype=float)[:, None] * np.array([[1.0, -1.0]])  # (200, 2)
    x[0, 0], x[1, 1] = 1e9, -1e9
    c = clip_outliers(x)  # k = 5 per side: clipped to the 5th smallest and 5th largest
    for j in range(2):
        ordered = np.sort(x[:, j])
        assert c[:, j].min() == ordered[4] and c[:, j].max() == ordered[195]
    assert (clip_outliers(x[:30]) == x[:30]).all()  # k = 0: nothing to clip


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
