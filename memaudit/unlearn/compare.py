"""The summary numbers of unlearn-eval: each model against the retrained one, and against itself
quantized.

Pure functions of measures already computed (no model runs here), so each rule is tested on
hand cases. Definitions and the reasons for each choice: docs/unlearning.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# quantization undoes forgetting when it recovers at least this share of the gap between the
# unlearned model and the original
RECOVERY_THRESHOLD = 0.5


def forget_quality(unlearned: np.ndarray, retrained: np.ndarray) -> dict[str, float]:
    """TOFU's forget quality: the two-sample KS test between the unlearned and the retrained
    model's per-text forget statistic; the p-value is the forget quality (high: the two
    distributions cannot be told apart).

    TOFU's statistic is the truth ratio (needs paraphrased and perturbed answers); the caller
    passes per-text mean token NLL on the forget texts, which is minus the loss attack's score:
    the KS statistic depends only on the order of the pooled values, so the two give the same
    p-value.
    """
    from scipy.stats import ks_2samp

    u, r = np.asarray(unlearned, float), np.asarray(retrained, float)
    test = ks_2samp(u, r)
    return {"ks_statistic": float(test.statistic), "p_value": float(test.pvalue), "n": len(u)}


def privleak(auc_unlearned: float, auc_retrained: float) -> float | None:
    """MUSE's PrivLeak from memaudit's forget-vs-holdout AUCs (forget = members).

    MUSE (Shi et al. 2024) defines ``PrivLeak = (AUC(f_unlearn) - AUC(f_retrain)) / AUC(f_retrain)``
    with an AUC whose positive class is the *holdout* (their ``forget_holdout`` key: forget the
    non-members, scored by minus the loss), i.e. ``1 - `` memaudit's AUC. In memaudit's AUCs:
    ``((1 - a_u) - (1 - a_r)) / (1 - a_r) = (a_r - a_u) / (1 - a_r)``. Same sign as MUSE's: near
    0 is good, large negative is under-unlearning (the forget set still looks trained on),
    large positive over-unlearning. A fraction; MUSE prints it times 100.

    >>> round(privleak(0.5, 0.5), 6), round(privleak(1.0, 0.5), 6), round(privleak(0.2, 0.5), 6)
    (0.0, -1.0, 0.6)

    Undefined (None) when the retrained model's AUC is 1: MUSE's denominator is then 0.
    """
    if auc_retrained >= 1.0:
        return None
    return (auc_retrained - auc_unlearned) / (1.0 - auc_retrained)


def unlearning_flags(auc: dict[str, float], auc_retrained: float) -> dict[str, bool]:
    """Over- / under-unlearning from the loss attack's AUC (memaudit's: forget = members).

    ``auc``: the model's AUC estimate (``value``, ``ci_low``, ``ci_high``, its bootstrap 95% CI).
    Over-unlearning: the whole CI lies below the retrained model's AUC (the forget set looks
    *less* familiar than text never trained on: an attacker sees that too). Under-unlearning: the
    whole CI lies above it. The retrained AUC is taken as a point (its own CI is not used).
    """
    return {
        "over_unlearning": bool(auc["ci_high"] < auc_retrained),
        "under_unlearning": bool(auc["ci_low"] > auc_retrained),
    }


def against_retrained(
    model: dict[str, Any], retrained: dict[str, Any], nll: np.ndarray, nll_retrained: np.ndarray
) -> dict[str, Any]:
    """Forget quality, PrivLeak and the flags of one model against the retrained one.

    ``model`` / ``retrained``: their results.json measures; ``nll`` / ``nll_retrained``: their
    per-text mean NLL on the forget texts.
    """
    auc, target = model["mia"]["loss"], retrained["mia"]["loss"]["value"]
    return {
        "forget_quality": {"statistic": "per-text mean NLL", **forget_quality(nll, nll_retrained)},
        "privleak": privleak(auc["value"], target),
        "auc_loss": auc["value"],
        "auc_loss_retrained": target,
        **unlearning_flags(auc, target),
    }


def quantization_recovery(
    model: dict[str, Any], quantized: dict[str, Any], original: dict[str, Any]
) -> dict[str, Any]:
    """How much of what ``model`` forgot (relative to ``original``, both at full precision) comes
    back in ``quantized`` (``model`` after quantization).

    - exact: ``(exact_q - exact) / (exact_orig - exact)``, when the model extracts less than the
      original (else not applicable: None);
    - NLL: ``(nll - nll_q) / (nll - nll_orig)``, forget NLL, when the model's is higher.

    Forgetting does not survive when either share is at least ``RECOVERY_THRESHOLD`` (half the
    way back); ``survives`` is None when the model forgot nothing by either measure.
    """

    def share(gained: float, gap: float) -> float | None:
        return gained / gap if gap > 0 else None

    exact = model["forget"]["exact"]["value"]
    nll = model["forget"]["nll"]["value"]
    shares = {
        "exact": share(
            quantized["forget"]["exact"]["value"] - exact,
            original["forget"]["exact"]["value"] - exact,
        ),
        "nll": share(
            nll - quantized["forget"]["nll"]["value"], nll - original["forget"]["nll"]["value"]
        ),
    }
    known = [s for s in shares.values() if s is not None]
    return {
        "recovered": shares,
        "threshold": RECOVERY_THRESHOLD,
        "survives": None if not known else not any(s >= RECOVERY_THRESHOLD for s in known),
    }
