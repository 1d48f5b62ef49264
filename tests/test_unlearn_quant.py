"""The quantization attack and the numbers against the retrained model (unlearn-eval).

The constructed case: forgetting that lives below the 4-bit grid. Every quantizable weight of a
model that memorized a text is pushed in the direction that raises the text's NLL, but kept
inside its own 4-bit rounding bin (group min and max untouched), as Zhang et al. 2024 explain the
failure: the unlearned weights round to the original's grid. Extraction is gone at full
precision and at 8 bits, and must come back at 4 bits, where the evaluation must flag it.
(Few steps of AdamW gradient ascent on the micro model do *not* come back at 4 bits: Adam moves
nearly every weight, the group extremes included, by about the learning rate, and the rounding
keeps that shift on average. So the case is built directly.)
"""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from memaudit.errors import InputError
from memaudit.io.texts import write_texts
from memaudit.metrics import membership_metrics
from memaudit.unlearn.compare import (
    forget_quality,
    privleak,
    quantization_recovery,
    unlearning_flags,
)
from memaudit.unlearn.config import UnlearnEvalConfig, parse_quant_bits
from memaudit.unlearn.evaluate import run_unlearn_eval
from memaudit.unlearn.quantize import fake_quantize, fake_quantize_model, quantizable_modules

PUSH = 0.3  # of a 4-bit step, from the weight's level toward the bin edge that raises the NLL


def numpy_rtn(w: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent round-to-nearest: per row, groups of ``group`` inputs, asymmetric min-max.
    Returns the dequantized weights and each weight's step."""
    out, steps = np.empty_like(w, dtype=np.float64), np.empty_like(w, dtype=np.float64)
    for r in range(w.shape[0]):
        for start in range(0, w.shape[1], min(group, w.shape[1])):
            g = w[r, start : start + group].astype(np.float64)
            lo, step = g.min(), (g.max() - g.min()) / (2**bits - 1)
            q = lo + step * np.round((g - lo) / step) if step > 0 else g.copy()
            out[r, start : start + group], steps[r, start : start + group] = q, step
    return out, steps


def test_round_trip_error_is_at_most_half_a_step_per_group():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.05, (6, 300)).astype(np.float32)  # 300 = 2 groups of 128 + 44
    w[1] = 0.7  # a constant row: kept exactly
    w[2, :128] += 3.0  # one group far from zero (asymmetric grid)
    errors = {}
    for bits in (8, 4):
        q = fake_quantize(torch.from_numpy(w), bits=bits, group_size=128).numpy()
        ref, steps = numpy_rtn(w, bits, 128)
        np.testing.assert_allclose(q, ref, atol=1e-5)
        assert (np.abs(q - w) <= steps / 2 + 1e-6).all()
        for start in (0, 128, 256):  # at most 2^bits levels in each group
            assert len(np.unique(np.round(q[0, start : start + 128], 6))) <= 2**bits
        np.testing.assert_array_equal(q[1], w[1])
        errors[bits] = np.abs(q - w).mean()
    assert errors[8] < errors[4] / 8
    short = torch.from_numpy(w[:, :40])  # a row shorter than a group: one group
    np.testing.assert_allclose(
        fake_quantize(short, bits=4, group_size=128).numpy(),
        numpy_rtn(w[:, :40], 4, 40)[0],
        atol=1e-5,
    )


def test_the_model_copy_quantizes_blocks_not_the_tied_head(repeated_model):
    model = repeated_model[0].model
    q, summary = fake_quantize_model(model, bits=4, group_size=128)
    names = set(quantizable_modules(model))
    assert names and not any("wte" in n or "lm_head" in n for n in names)
    assert summary["matrices"] == len(names)
    head = model.get_output_embeddings().weight
    torch.testing.assert_close(q.get_output_embeddings().weight, head)
    name = sorted(names)[0]
    before, after = model.get_submodule(name).weight, q.get_submodule(name).weight
    assert not torch.equal(before, after)  # the copy changed, the model given did not
    ref, steps = numpy_rtn(before.detach().numpy().T, 4, 128)  # Conv1D: (in, out)
    np.testing.assert_allclose(after.detach().numpy().T, ref, atol=1e-5)


def test_quant_bits_setting():
    assert parse_quant_bits("8,4") == (8, 4) and parse_quant_bits("") == ()
    for bad in ("4,4", "1", "16", "four"):
        with pytest.raises(InputError, match="quant_bits"):
            parse_quant_bits(bad)


def test_forget_quality_is_scipys_ks_test():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 30), rng.normal(0.5, 1, 25)
    fq = forget_quality(a, b)
    assert fq["p_value"] == ks_2samp(a, b).pvalue and fq["ks_statistic"] == ks_2samp(a, b).statistic
    # the KS test sees only order: the loss-attack score (minus the NLL) gives the same p-value
    assert forget_quality(-a, -b)["p_value"] == pytest.approx(fq["p_value"])


def test_privleak_is_muses_formula_on_a_hand_case():
    from sklearn.metrics import roc_auc_score

    # per-text NLLs: the unlearned model still finds the forget texts easy, the retrained does not
    forget_u, holdout_u = np.array([1.0, 1.2, 2.5, 0.9]), np.array([2.0, 2.2, 1.1, 3.0])
    forget_r, holdout_r = np.array([2.1, 1.9, 2.6, 2.4]), np.array([2.0, 2.5, 1.8, 3.0])

    def ours(f, h):  # memaudit's AUC: forget = members, loss attack score = -NLL
        return membership_metrics(-np.r_[f, h], np.r_[np.ones(4), np.zeros(4)], n_bootstrap=1)[
            "auc"
        ].value

    def muse(f, h):  # MUSE's: holdout the positive class, scored by minus the NLL
        return roc_auc_score(np.r_[np.zeros(4), np.ones(4)], -np.r_[f, h])

    expected = (muse(forget_u, holdout_u) - muse(forget_r, holdout_r)) / muse(forget_r, holdout_r)
    got = privleak(ours(forget_u, holdout_u), ours(forget_r, holdout_r))
    assert got == pytest.approx(expected) and got < 0  # under-unlearning is negative, as in MUSE
    assert privleak(0.7, 1.0) is None  # MUSE's denominator is 0: undefined, not a crash


def test_over_and_under_unlearning_flags_on_hand_cases():
    rng = np.random.default_rng(2)
    holdout = rng.normal(2.0, 0.2, 40)
    labels = np.r_[np.ones(40), np.zeros(40)]
    flags = {}
    for case, forget in (
        ("over", rng.normal(3.0, 0.2, 40)),  # forget NLL far above holdout: unfamiliar
        ("under", rng.normal(1.0, 0.2, 40)),
        ("like", rng.normal(2.0, 0.2, 40)),
    ):
        auc = membership_metrics(-np.r_[forget, holdout], labels, n_bootstrap=200)["auc"]
        flags[case] = unlearning_flags(auc.to_dict(), 0.5)
    assert flags["over"] == {"over_unlearning": True, "under_unlearning": False}
    assert flags["under"] == {"over_unlearning": False, "under_unlearning": True}
    assert flags["like"] == {"over_unlearning": False, "under_unlearning": False}


def test_recovery_rule_on_a_hand_case():
    def m(exact, nll):
        return {"forget": {"exact": {"value": exact}, "nll": {"value": nll}}}

    original, unlearned = m(1.0, 0.1), m(0.0, 2.1)
    assert quantization_recovery(unlearned, m(0.5, 2.0), original)["survives"] is False
    nll_only = quantization_recovery(unlearned, m(0.0, 1.0), original)
    assert nll_only["recovered"]["nll"] == pytest.approx(0.55) and nll_only["survives"] is False
    assert quantization_recovery(unlearned, m(0.25, 1.3), original)["survives"] is True
    assert quantization_recovery(original, m(1.0, 0.2), original)["survives"] is None


def below_the_grid(model, forget_ids: list[list[int]]):
    """A copy of ``model`` whose quantizable weights moved toward a higher forget NLL, each within
    its own 4-bit rounding bin of group size 128 (the group's min and max kept)."""
    model = copy.deepcopy(model)
    model.zero_grad()
    for ids in forget_ids:
        x = torch.tensor(ids)[None]
        model(input_ids=x, labels=x).loss.backward()
    with torch.no_grad():
        for m in quantizable_modules(model).values():
            linear = isinstance(m, torch.nn.Linear)
            w, g = (m.weight, m.weight.grad) if linear else (m.weight.T, m.weight.grad.T)
            rows, width = w.shape
            size = min(128, width)
            wg, gg = w.reshape(rows, -1, size), g.reshape(rows, -1, size)
            lo, hi = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
            step = (hi - lo) / 15
            level = torch.round((wg - lo) / step)
            moved = lo + step * (level + PUSH * torch.sign(gg)).clamp(0, 15)
            keep = (wg == lo) | (wg == hi)
            w.copy_(torch.where(keep, wg, moved).reshape(rows, width))
    model.zero_grad(set_to_none=True)
    return model


@pytest.fixture(scope="module")
def quant_eval(repeated_model, snippets, reference_dir, tmp_path_factory):
    lm, seen = repeated_model
    root = tmp_path_factory.mktemp("unlearn-quant")
    forget = [seen, seen[len(seen) // 2 :]]  # both memorized (the second from mid-text)
    files = {
        name: write_texts(root / f"{name}.jsonl", ((f"{name}{i}", t) for i, t in enumerate(texts)))
        for name, texts in (
            ("forget", forget),
            ("holdout", snippets["nonmembers2"][:6]),
            ("retain", snippets["nonmembers"][:20]),
        )
    }
    hidden = root / "below-grid"
    shutil.copytree(lm.name, hidden)
    below_the_grid(lm.model, lm.encode(forget)).save_pretrained(hidden, safe_serialization=True)
    cfg = UnlearnEvalConfig(
        original=lm.name,
        unlearned=(str(hidden),),
        retrained=str(reference_dir),  # never saw the forget texts
        forget=str(files["forget"]),
        holdout=str(files["holdout"]),
        retain=str(files["retain"]),
        prefix_tokens=16,
        suffix_tokens=16,
        eval_texts=8,
        relearn_steps=0,
        n_bootstrap=100,
        out=str(root / "eval"),
        cache_dir=str(root / "cache"),
    )
    out, results = run_unlearn_eval(cfg)
    return root, cfg, out, results


def test_forgetting_below_the_4bit_grid_comes_back_and_is_flagged(quant_eval):
    _, _, out, results = quant_eval
    ev = results["evaluation"]
    original, hidden, retrained = ev["original"], ev["below-grid"], ev["retrained"]
    assert original["forget"]["exact"]["value"] == 1.0
    assert hidden["forget"]["exact"]["value"] == 0.0
    assert hidden["forget"]["nll"]["value"] > original["forget"]["nll"]["value"] + 0.5
    q4, q8 = hidden["quantized"]["4"], hidden["quantized"]["8"]
    # at 4 bits the two models share a grid, so the same numbers as the original quantized
    assert q4["forget"]["exact"] == original["quantized"]["4"]["forget"]["exact"]
    assert q4["forget"]["nll"]["value"] == pytest.approx(
        original["quantized"]["4"]["forget"]["nll"]["value"], abs=1e-4
    )
    assert q4["forget"]["exact"]["value"] == 1.0 and q4["survives"] is False
    assert q8["forget"]["exact"]["value"] == 0.0 and q8["survives"] is True
    assert hidden["forgetting_survives_quantization"] == {"8": True, "4": False}
    assert retrained["forgetting_survives_quantization"] == {"8": True, "4": True}
    assert original["forgetting_survives_quantization"] == {"8": None, "4": None}
    for m in ev.values():
        assert set(m["quantized"]["4"]["mia"]) == {"loss", "zlib", "min_k", "min_k_pp"}
        assert m["quantized"]["4"]["fingerprint"] != m["fingerprint"]
    html = (out / "report.html").read_text()
    assert "4-bit quantized: forgetting survives" in html and "<b>NO</b>" in html


def test_forget_quality_and_privleak_come_from_the_runs_own_numbers(quant_eval):
    from scipy.stats import ks_2samp

    _, _, out, results = quant_eval
    ev = results["evaluation"]
    assert results["against_retrained"]["available"] and "vs_retrained" not in ev["retrained"]
    rows = pq.read_table(out / "scores.parquet").to_pydict()
    nll = {}  # model -> the forget texts' NLLs, in the run's order
    for model, kind, value in zip(rows["model"], rows["set"], rows["nll"]):
        if kind == "forget":
            nll.setdefault(model, []).append(value)
    for name in ("original", "below-grid"):
        v = ev[name]["vs_retrained"]
        p = ks_2samp(nll[name], nll["retrained"]).pvalue
        assert v["forget_quality"]["p_value"] == pytest.approx(p)
        auc_u, auc_r = ev[name]["mia"]["loss"]["value"], ev["retrained"]["mia"]["loss"]["value"]
        assert v["privleak"] == pytest.approx(((1 - auc_u) - (1 - auc_r)) / (1 - auc_r))
    assert ev["original"]["vs_retrained"]["privleak"] < 0  # the original still leaks its forget set


def test_a_second_run_reuses_the_quantized_scores(quant_eval):
    root, cfg, _, first = quant_eval
    again = UnlearnEvalConfig(**{**cfg.to_dict(), "out": str(root / "eval2"), "report": False})
    _, res = run_unlearn_eval(again)
    for name, m in res["evaluation"].items():
        assert m["passes"]["scoring"] == 0, name
        for bits, q in m["quantized"].items():
            assert q["passes"]["scoring"] == 0, (name, bits)
            assert q["forget"] == first["evaluation"][name]["quantized"][bits]["forget"]
    written = json.loads((root / "eval2" / "results.json").read_text())
    assert written["quantization"]["bits"] == [8, 4]


def test_without_a_retrained_model_the_results_say_so(quant_eval):
    root, cfg, _, _ = quant_eval
    alone = UnlearnEvalConfig(
        **{
            **cfg.to_dict(),
            "retrained": None,
            "quant_bits": "none",
            "out": str(root / "eval3"),
        }
    )
    _, res = run_unlearn_eval(alone)
    assert res["against_retrained"]["available"] is False
    assert "no retrained model" in res["against_retrained"]["note"]
    assert all("quantized" not in m and "vs_retrained" not in m for m in res["evaluation"].values())
    assert "no retrained model" in (root / "eval3" / "report.html").read_text()
