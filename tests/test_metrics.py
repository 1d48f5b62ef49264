import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from memaudit.metrics import membership_metrics, roc_auc, roc_curve, tpr_at_fpr


def random_case(rng):
    n = int(rng.integers(4, 80))
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    s = rng.integers(0, 6, n).astype(float) if rng.random() < 0.5 else rng.normal(size=n)
    return s, y


def test_auc_equals_sklearn_including_ties():
    rng = np.random.default_rng(0)
    for _ in range(300):
        s, y = random_case(rng)
        assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_points_equal_sklearn():
    rng = np.random.default_rng(1)
    for _ in range(100):
        s, y = random_case(rng)
        fpr, tpr, _ = roc_curve(s, y)
        sk_fpr, sk_tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
        np.testing.assert_allclose(fpr, sk_fpr)
        np.testing.assert_allclose(tpr, sk_tpr)


def test_tpr_at_fpr_matches_brute_force_over_thresholds():
    rng = np.random.default_rng(2)
    for _ in range(100):
        s, y = random_case(rng)
        for bound in (0.0, 0.01, 0.1, 0.5):
            best = 0.0
            for thr in np.r_[np.inf, np.unique(s)]:
                pred = s >= thr
                fpr = (pred & (y == 0)).sum() / (y == 0).sum()
                if fpr <= bound:
                    best = max(best, (pred & (y == 1)).sum() / (y == 1).sum())
            assert tpr_at_fpr(s, y, bound) == pytest.approx(best)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(150), np.zeros(150)]
    s = rng.normal(size=300) + 0.8 * y
    a = membership_metrics(s, y, n_bootstrap=500, seed=7)
    b = membership_metrics(s, y, n_bootstrap=500, seed=7)
    assert a == b
    auc = a["auc"]
    assert auc.ci_low < auc.value < auc.ci_high
    assert 0.05 < auc.ci_high - auc.ci_low < 0.25  # about 2 x 1.96 x SE for n = 300


def test_nan_scores_rank_lowest_and_bad_labels_raise():
    assert roc_auc([np.nan, 1.0, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both members"):
        roc_auc([1, 2], [1, 1])


@pytest.mark.parametrize("seed", range(6))
def test_nan_and_inf_ties_match_sklearn_on_the_same_mapping_in_any_order(seed):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = 40
    pool = np.array([np.nan, np.inf, -np.inf, 0.5, 1.0, 2.0])
    scores = np.where(rng.random(n) < 0.6, rng.choice(pool, n), rng.normal(size=n))
    labels = np.r_[np.ones(n // 2), np.zeros(n // 2)].astype(int)
    rng.shuffle(labels)
    finite = scores[np.isfinite(scores)]
    lo, hi = finite.min() - 10, finite.max() + 10
    # the documented mapping: NaN ties with -inf below every finite score; +inf above all
    mapped = np.where(
        np.isnan(scores) | (scores == -np.inf), lo, np.where(scores == np.inf, hi, scores)
    )
    expected = roc_auc_score(labels, mapped)
    for _ in range(3):  # the order of the inputs never matters
        perm = rng.permutation(n)
        assert roc_auc(scores[perm], labels[perm]) == pytest.approx(expected, abs=1e-12)


def test_two_nan_scores_tie():
    assert roc_auc([np.nan, np.nan, 1, 0], [1, 0, 1, 0]) == pytest.approx(0.625)
    assert roc_auc([np.nan, np.nan, 1, 0], [0, 1, 1, 0]) == pytest.approx(0.625)
