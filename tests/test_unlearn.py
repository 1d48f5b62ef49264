"""Unlearning on a real lab model: every method removes what it should, and the evaluation can
tell how well.
"""

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from memaudit.cli.app import app
from memaudit.errors import InputError
from memaudit.lab.lm import TrainSettings, random_windows, token_stream
from memaudit.models.hf import load_causal_lm, model_fingerprint
from memaudit.unlearn.evaluate import UnlearnEvalConfig, run_unlearn_eval
from memaudit.unlearn.kfac import collect_factors, curvature_edit, mlp_layers
from memaudit.unlearn.methods import METHODS, Activations, StepInputs
from memaudit.unlearn.retrain import retrain_config
from memaudit.unlearn.run import UnlearnConfig, run_unlearn

runner = CliRunner()
GRADIENT_METHODS = ("ga", "grad_diff", "npo", "simnpo")


def step_inputs(logp, tokens=(4.0, 8.0), ref=(-1.0, -1.0), retain=None, beta=0.1, gamma=0.0):
    as_t = lambda v: torch.tensor(v, dtype=torch.float64, requires_grad=True)  # noqa: E731
    return StepInputs(
        as_t(logp),
        torch.tensor(tokens, dtype=torch.float64),
        torch.tensor(ref, dtype=torch.float64),
        None if retain is None else torch.tensor(retain, dtype=torch.float64),
        beta,
        gamma,
        1.0,
    )


def test_losses_equal_their_formulas():
    x = step_inputs([-2.0, -4.0], retain=1.5)
    forget_nll = 6.0 / 12.0
    assert METHODS.get("ga").loss(x).item() == pytest.approx(-forget_nll)
    assert METHODS.get("grad_diff").loss(x).item() == pytest.approx(-forget_nll + 1.5)
    npo = (2 / 0.1) * np.mean(
        [math.log1p(math.exp(0.1 * (-2 + 1))), math.log1p(math.exp(0.1 * (-4 + 1)))]
    ) + 1.5
    assert METHODS.get("npo").loss(x).item() == pytest.approx(npo)
    y = step_inputs([-2.0, -4.0], beta=2.5, gamma=0.5)
    # the authors' code: NLL / (labelled tokens, the first one included) - gamma, inside beta
    nll, labelled = np.array([2.0, 4.0]), np.array([4.0, 8.0]) + 1
    logsigmoid = lambda z: -np.log1p(np.exp(-z))  # noqa: E731
    simnpo = np.mean(-logsigmoid(2.5 * (nll / labelled - 0.5))) * 2 / 2.5
    assert METHODS.get("simnpo").loss(y).item() == pytest.approx(simnpo)


def any_step_inputs(method, seed=0):
    """Inputs every kind of method reads: per-token log-probabilities (the leaf the sequence
    sums come from), alternatives, and block activations."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1.0] * 4 + [0.0] * 4, [1.0] * 8], dtype=torch.float64)  # (2, 8)
    tokens = (-torch.rand(2, 8, generator=g, dtype=torch.float64) - 0.1).requires_grad_()
    hidden = lambda: torch.randn(2, 8, 6, generator=g, dtype=torch.float64)  # noqa: E731
    activations = Activations(
        hidden().requires_grad_(),
        mask,
        hidden().requires_grad_(),
        hidden(),
        torch.rand(6, generator=g, dtype=torch.float64) * 5,
        2.0,
    )
    x = StepInputs(
        (tokens * mask).sum(1),
        mask.sum(1),
        torch.tensor([-3.0, -5.0], dtype=torch.float64),
        torch.tensor(1.0, dtype=torch.float64)
        if (method.needs_retain or method.uses_retain)
        else None,
        method.default_beta,
        0.0,
        1.0,
        forget_token_logp=tokens,
        forget_token_mask=mask,
        alternative_logp=torch.tensor([-6.0, -7.0], dtype=torch.float64, requires_grad=True),
        alternative_reference_logp=torch.tensor([-6.5, -6.0], dtype=torch.float64),
        activations=activations,
    )
    return x, tokens


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_pushes_the_forget_set_down(name):
    """The invariant every registered method must meet: lowering its loss lowers log p(forget),
    token by token. A representation method (rmu) reads no log-probability; its equivalent:
    lowering its loss moves each forget activation toward its target and each retain
    activation toward the original's.
    """
    method = METHODS.get(name)
    x, tokens = any_step_inputs(method)
    method.loss(x).backward()
    if method.needs_activations:
        a = x.hidden()
        assert tokens.grad is None  # no path to the forget log-probabilities
        toward_target = (-a.forget.grad * (a.target - a.forget)).sum(-1)  # (B, T)
        assert (toward_target[a.forget_mask > 0] > 0).all()
        assert (a.forget.grad[a.forget_mask == 0] == 0).all()  # padding plays no part
        assert ((-a.retain.grad * (a.retain_original - a.retain)).sum(-1) > 0).all()
        return
    grad = tokens.grad[x.forget_token_mask > 0]
    assert (grad >= 0).all() and (grad > 0).any(), grad
    assert (tokens.grad[x.forget_token_mask == 0] == 0).all()


def test_curvature_edit_rho_one_keeps_the_weights_small_rho_changes_them(target_dir, snippets):
    lm = load_causal_lm(target_dir)
    batches = random_windows(
        token_stream(lm.tokenizer, snippets["members"]), TrainSettings(batch_size=4, seq_len=32)
    )
    modules = mlp_layers(lm.model)
    assert len(modules) == 2 * lm.model.config.n_layer and len(mlp_layers(lm.model, "0")) == 2
    factors = collect_factors(lm.model, [batches(i) for i in range(3)], modules)
    before = {n: m.weight.detach().clone() for n, m in modules.items()}
    report = curvature_edit(modules, factors, 1.0)
    for n, m in modules.items():
        assert torch.allclose(m.weight, before[n], atol=1e-5) and report[n]["kept"] == 1.0
    report = curvature_edit(modules, factors, 0.3)
    for n, m in modules.items():
        assert report[n]["kept"] < 0.5 and report[n]["relative_change"] > 0.05
        assert not torch.allclose(m.weight, before[n], atol=1e-3)
    with pytest.raises(InputError, match="rho must be in"):
        curvature_edit(modules, factors, 0.0)


def test_curvature_factors_equal_a_direct_computation_without_the_last_position(target):
    model = target.model
    name, module = next(iter(mlp_layers(model, "0").items()))
    batch = torch.tensor(target.encode(["def f(x):\n    return x * 2\n" * 3])[0][:24])[None]
    factors = collect_factors(model, [batch], {name: module})
    # direct: the module's input and the gradient of the summed NLL at its output
    seen = {}
    handle = module.register_forward_hook(
        lambda m, i, o: seen.update(a=i[0].detach(), out=o) or o.retain_grad()
    )
    try:
        logits = model(input_ids=batch).logits[0].double()  # (T, V)
        nll = -torch.log_softmax(logits[:-1], -1).gather(-1, batch[0, 1:, None]).sum()
        nll.backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    a = seen["a"][0, :-1].double()  # (T-1, in): the last position predicts nothing
    g = seen["out"].grad[0, :-1].double()  # (T-1, out)
    assert torch.count_nonzero(seen["out"].grad[0, -1]) == 0
    torch.testing.assert_close(factors[name]["A"], a.T @ a / (len(batch[0]) - 1))
    torch.testing.assert_close(factors[name]["G"], g.T @ g / (len(batch[0]) - 1))


@pytest.fixture(scope="module")
def evaluated(lab):
    root, model, files = lab
    before = model_fingerprint(model)
    dirs = []
    for name in GRADIENT_METHODS:
        dirs.append(
            run_unlearn(
                UnlearnConfig(
                    model=str(model),
                    forget=str(files["forget"]),
                    retain=str(files["retain"]),
                    method=name,
                    steps=20,
                    save_every=10,
                    out=str(root / f"u-{name}"),
                )
            )
        )
    dirs.append(
        run_unlearn(
            UnlearnConfig(
                model=str(model),
                forget=str(files["forget"]),
                retain=str(files["retain"]),
                method="kfac",
                rho=0.8,
                out=str(root / "u-kfac"),
            )
        )
    )
    dirs.append(
        run_unlearn(
            UnlearnConfig(
                model=str(model),
                forget=str(files["forget"]),
                method="ga",
                steps=80,
                out=str(root / "u-ga-long"),
            )
        )
    )
    assert model_fingerprint(model) == before  # the original is never written
    cfg = UnlearnEvalConfig(
        original=str(model),
        unlearned=tuple(map(str, dirs)),
        forget=str(files["forget"]),
        holdout=str(files["holdout"]),
        retain=str(files["retain"]),
        retrain=True,
        prefix_tokens=16,
        suffix_tokens=16,
        eval_texts=60,
        quant_bits="4",  # one width: the attack's own tests are in test_unlearn_quant.py
        n_bootstrap=200,
        out=str(root / "eval"),
        cache_dir=str(root / "cache"),
    )
    out, results = run_unlearn_eval(cfg)
    return root, cfg, out, results


def test_every_method_lowers_extraction_and_the_evaluation_sees_the_costs(evaluated):
    _, _, out, results = evaluated
    ev = results["evaluation"]
    assert list(ev) == ["original", "ga", "grad_diff", "npo", "simnpo", "kfac", "ga-2", "retrained"]
    original = ev["original"]["forget"]
    assert (
        original["exact"]["value"] >= 0.3 and original["loose"]["value"] >= 0.5
    )  # the model did memorize its forget set
    for name in ("ga", "grad_diff", "npo", "simnpo", "kfac"):
        f = ev[name]["forget"]
        assert (
            f["exact"]["value"] < original["exact"]["value"]
            and f["loose"]["value"] < original["loose"]["value"]
        ), name
        assert f["nll"]["value"] > original["nll"]["value"] + 0.1, name
    for m in ev.values():  # exact from the argmax flags equals exact from real greedy decoding
        assert m["forget"]["exact"] == m["forget"]["exact_generated"]
    # gradient ascent run too long wrecks the retain set, and the evaluation shows it
    assert (
        ev["ga-2"]["retain"]["delta"]["value"] > 1.5
        and ev["ga-2"]["retain"]["delta"]["ci"][0] > 3 * ev["npo"]["retain"]["delta"]["value"]
    )
    assert (
        ev["original"]["mia"]["loss"]["value"] > 0.9
    )  # forget vs holdout is wide open before unlearning
    # the relearning attack: what gradient ascent only suppressed comes back; the retrained model
    # never had it
    assert ev["ga"]["relearn"]["nll_recovered"] > ev["retrained"]["relearn"]["nll_recovered"] + 1.0
    assert (out / "report.html").read_text().count("relearning attack") >= 3
    assert all(set(m["forgetting_survives_quantization"]) == {"4"} for m in ev.values())


def test_calibration_curves_come_from_the_saved_steps(evaluated):
    _, cfg, _, results = evaluated
    cal = results["calibration"]
    assert cal["target_auc"] == results["evaluation"]["retrained"]["mia"]["loss"]["value"]
    assert [p["step"] for p in cal["methods"]["npo"]["curve"]] == [10, 20]
    for c in cal["methods"].values():
        assert c["chosen"] is None or c["chosen"]["retain_delta"] <= cfg.retain_budget


def test_retrain_drops_the_forget_documents_and_reuses_the_scores(evaluated, lab):
    root, cfg, _, _ = evaluated
    _, model, files = lab
    forget = [json.loads(line)["text"] for line in files["forget"].read_text().splitlines()]
    rc = retrain_config(model, forget, root / "again")
    kept = [json.loads(line)["text"] for line in open(rc.corpus)]
    assert len(kept) == 150 and not set(forget) & set(kept)
    # the gold standard has the original's tokenizer (its corpus changed, its tokens not)
    from memaudit.models.hf import tokenizer_fingerprint

    assert tokenizer_fingerprint(root / "eval" / "retrained") == tokenizer_fingerprint(model)
    again = UnlearnEvalConfig(
        **{
            **cfg.to_dict(),
            "unlearned": (),
            "retrain": False,
            "relearn_steps": 0,
            "out": str(root / "eval2"),
        }
    )
    _, res = run_unlearn_eval(again)
    assert (
        res["evaluation"]["original"]["passes"]["scoring"] == 0
    )  # every score of the original came from the cache


def test_unlearn_command_errors(lab, tmp_path):
    _, model, files = lab
    r = runner.invoke(
        app,
        [
            "unlearn",
            "--model",
            str(model),
            "--forget",
            str(files["forget"]),
            "--out",
            str(tmp_path / "x"),
            "--method",
            "gaa",
        ],
    )
    assert r.exit_code == 2 and "did you mean 'ga'" in r.stderr
    r = runner.invoke(
        app,
        [
            "unlearn",
            "--model",
            str(model),
            "--forget",
            str(files["forget"]),
            "--out",
            str(tmp_path / "x"),
            "--method",
            "grad_diff",
        ],
    )
    assert r.exit_code == 2 and "needs --retain" in r.stderr
    r = runner.invoke(
        app,
        [
            "unlearn",
            "--model",
            str(model),
            "--forget",
            str(files["forget"]),
            "--out",
            str(model),
            "--method",
            "ga",
        ],
    )
    assert r.exit_code == 2 and "outside the original model dir" in r.stderr
    r = runner.invoke(
        app,
        [
            "unlearn-eval",
            "--original",
            str(model),
            "--forget",
            str(files["forget"]),
            "--holdout",
            str(files["holdout"]),
            "--retain",
            str(files["retain"]),
            "--retrained",
            str(model),
            "--retrain",
        ],
    )
    assert r.exit_code == 2 and "not both" in r.stderr


def test_unlearn_retain_with_bad_records_stops_or_lists_them(lab, tmp_path):
    _, model, files = lab
    retain = tmp_path / "retain.jsonl"
    retain.write_text(files["retain"].read_text() + '{"text": 3}\n')
    bad_line = len(retain.read_text().splitlines())
    args = ["unlearn", "--model", str(model), "--forget", str(files["forget"])]
    args += ["--retain", str(retain), "--method", "grad_diff", "--steps", "1"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 2
    assert f"retain.jsonl:{bad_line}: 'text' must be a string" in r.stderr
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--skip-invalid"])
    assert r.exit_code == 0, r.output
    assert "skipped 1 invalid record(s)" in r.stderr
    record = json.loads((tmp_path / "b" / "memaudit_unlearn.json").read_text())
    assert [s["line"] for s in record["data"]["skipped"]] == [bad_line]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "c"), "--lr", "-1"])
    assert r.exit_code == 2 and "lr and beta must be positive" in r.stderr
    assert not (tmp_path / "c").exists()  # refused before anything was written
