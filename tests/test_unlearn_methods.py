"""The methods added to the one loop: wga, idk_dpo, rmu. Each loss equals its formula on a hand
case, and each, run end to end on the lab model, does what it is for.
"""

import copy
import json

import numpy as np
import pytest
import torch

from memaudit.errors import InputError
from memaudit.lab.lm import build_model
from memaudit.models.hf import load_causal_lm
from memaudit.unlearn.idk import alternative_sequences, prompt_tokens
from memaudit.unlearn.loop import sequence_logp
from memaudit.unlearn.methods import METHODS, Activations, StepInputs
from memaudit.unlearn.rmu import Steering
from memaudit.unlearn.run import UNLEARN_RECORD, UnlearnConfig, run_unlearn

f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731


def test_kfac_rho_is_checked_at_the_flag():
    with pytest.raises(InputError, match="--rho must be in"):
        UnlearnConfig(model="m", forget="f", out="o", method="kfac", rho=0.0)


def hand_inputs(**extra):
    return StepInputs(
        f64([-2.0, -4.0]), f64([2.0, 3.0]), f64([-1.0, -5.0]), f64(1.5), 0.5, 0.0, 2.0, **extra
    )


def test_wga_equals_its_formula():
    logp = np.array([[-0.1, -2.0, -9.0], [-0.5, -0.3, -1.2]])
    mask = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    x = hand_inputs(forget_token_logp=f64(logp), forget_token_mask=f64(mask))
    expected = (np.exp(logp) ** 0.5 * logp * mask).sum() / mask.sum() + 2.0 * 1.5
    assert METHODS.get("wga").loss(x).item() == pytest.approx(expected)


def test_idk_dpo_equals_its_formula():
    x = hand_inputs(
        alternative_logp=f64([-3.0, -2.0]), alternative_reference_logp=f64([-4.0, -2.5])
    )
    margin = (np.array([-3.0, -2.0]) - [-4.0, -2.5]) - (np.array([-2.0, -4.0]) - [-1.0, -5.0])
    logsigmoid = -np.log1p(np.exp(-0.5 * margin))
    expected = -(2 / 0.5) * logsigmoid.mean() + 2.0 * 1.5
    assert METHODS.get("idk_dpo").loss(x).item() == pytest.approx(expected)


def test_rmu_equals_its_formula():
    rng = np.random.default_rng(0)
    forget, retain, original = (
        rng.normal(size=(2, 3, 4)),
        rng.normal(size=(2, 5, 4)),
        rng.normal(size=(2, 5, 4)),
    )
    mask, target = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]), rng.normal(size=4)
    a = Activations(f64(forget), f64(mask), f64(retain), f64(original), f64(target), 3.0)
    per_row = [((forget[b, : int(mask[b].sum())] - target) ** 2).mean() for b in range(2)]
    expected = np.mean(per_row) + 3.0 * ((retain - original) ** 2).mean()
    assert METHODS.get("rmu").loss(hand_inputs(activations=a)).item() == pytest.approx(expected)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_steering_trains_the_mlp_outputs_and_recovers_the_original_activations(target, arch):
    model = build_model(target.tokenizer, size="micro", context=64, arch=arch)
    steering = Steering.build(model, layer=1, coefficient=5.0, alpha=1.0, seed=3)
    out = "c_proj" if arch == "gpt2" else "down_proj"
    assert [n.split(".")[-2] for n in steering.original] == [out, out]  # blocks 0 and 1
    assert steering.target.norm().item() == pytest.approx(5.0)
    assert (steering.target > 0).all()  # u uniform on [0, 1)^D, as the WMDP code draws it
    frozen = copy.deepcopy(model)
    ids = torch.tensor(target.encode(["def f(x):\n    return x + 1\n"]))
    with torch.no_grad():
        for p in steering.trained:
            p.add_(0.3 * torch.randn_like(p))
    # the original's activations, from the edited model with only the few original weights
    expected = block_output(frozen, ids)
    got = steering.original_hidden(model, ids, torch.ones_like(ids))
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(block_output(model, ids), expected, atol=1e-3)


@torch.no_grad()
def block_output(model, ids, layer=1):
    """Block ``layer``'s output, read by a hook (the last block's is not a hidden_states entry:
    those have the final norm applied)."""
    seen = []
    stack = model.transformer.h if hasattr(model, "transformer") else model.model.layers
    handle = stack[layer].register_forward_hook(
        lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o)
    )
    try:
        model(input_ids=ids)
    finally:
        handle.remove()
    return seen[0]


def forget_records(files):
    return [json.loads(line) for line in files["forget"].read_text().splitlines()]


def run(lab, name, method, **settings):
    root, model, files = lab
    return run_unlearn(
        UnlearnConfig(
            model=str(model),
            forget=str(files["forget"]),
            retain=str(files["retain"]),
            method=method,
            out=str(root / f"m-{name}"),
            **settings,
        )
    )


@torch.no_grad()
def logp_of(model_dir, seqs):
    model = load_causal_lm(model_dir).model
    ids = torch.full((len(seqs), max(map(len, seqs))), 0)
    mask = torch.zeros_like(ids)
    for r, s in enumerate(seqs):
        ids[r, : len(s)], mask[r, : len(s)] = torch.tensor(s), 1
    return sequence_logp(model, ids, mask)[0].numpy()


def test_wga_lowers_the_forget_likelihood(lab):
    _, model, files = lab
    out = run(lab, "wga", "wga", steps=15)
    lm = load_causal_lm(model)
    seqs = lm.encode([r["text"] for r in forget_records(files)])
    before, after = logp_of(model, seqs), logp_of(out, seqs)
    assert (after < before).all() and (before - after).mean() > 10, (before, after)


def test_idk_dpo_makes_the_placeholder_likely_after_the_prompt(lab):
    _, model, files = lab
    answer = " [redacted]"
    out = run(lab, "idk", "idk_dpo", steps=15, idk_answers=(answer,))
    lm = load_causal_lm(model)
    records = forget_records(files)
    seqs = lm.encode([r["text"] for r in records])
    from memaudit.io.texts import read_texts

    read = read_texts(files["forget"]).records
    alts = alternative_sequences(lm.tokenizer, read, seqs, (answer,), seed=0, eos=0)
    k = [prompt_tokens(lm.tokenizer, r, s) for r, s in zip(read, seqs)]
    prompts = [s[:n] for s, n in zip(seqs, k)]
    # log p(answer | prompt) = log p(prompt + answer) - log p(prompt)
    idk = lambda d: logp_of(d, [a[:-1] for a in alts]) - logp_of(d, prompts)  # noqa: E731
    assert (idk(out) > idk(model) + 1.0).all(), (idk(model), idk(out))
    assert (logp_of(out, seqs) < logp_of(model, seqs)).all()  # and the true answer less likely


def test_rmu_lowers_the_cosine_of_forget_activations_to_their_originals(lab):
    _, model, files = lab
    # c = 100: some 25 times this model's block-0 activation norm (~4); the WMDP default of 20
    # is for a 7B model's
    out = run(lab, "rmu", "rmu", steps=30, lr=1e-2, rmu_steering=100.0)
    record = json.loads((out / UNLEARN_RECORD).read_text())
    assert record["steering"]["layer"] == 0 and record["steering"]["trained"] == [
        "transformer.h.0.mlp.c_proj.weight"
    ]
    lm, new = load_causal_lm(model), load_causal_lm(out)
    changed = [
        n
        for (n, p), q in zip(lm.model.named_parameters(), new.model.parameters())
        if not torch.equal(p, q)
    ]
    assert changed == ["transformer.h.0.mlp.c_proj.weight"]  # only the steered MLP was trained

    def cosine(texts):
        ids = [torch.tensor([t]) for t in lm.encode(texts)]
        with torch.no_grad():
            h = [
                m.model(input_ids=i, output_hidden_states=True).hidden_states[1]
                for m in (lm, new)
                for i in ids
            ]
        n = len(ids)
        return np.mean(
            [torch.cosine_similarity(h[i], h[n + i], dim=-1).mean().item() for i in range(n)]
        )

    retain = [json.loads(line)["text"][:400] for line in files["retain"].read_text().splitlines()]
    forget_cos, retain_cos = cosine([r["text"] for r in forget_records(files)]), cosine(retain[:6])
    assert forget_cos < 0.5 and retain_cos > forget_cos + 0.3, (forget_cos, retain_cos)


def test_new_settings_are_checked(lab, tmp_path):
    from typer.testing import CliRunner

    from memaudit.cli.app import app

    _, model, files = lab
    args = ["unlearn", "--model", str(model), "--forget", str(files["forget"])]
    args += ["--retain", str(files["retain"]), "--steps", "1"]
    r = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "a"), "--method", "rmu", "--rmu-layer", "2"]
    )
    assert r.exit_code == 2 and "--rmu-layer must be in 0..1" in r.stderr
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--idk-answer", " "])
    assert r.exit_code == 2 and "--idk-answer must not be empty" in r.stderr
    out = tmp_path / "c"
    r = CliRunner().invoke(
        app, [*args, "--out", str(out), "--method", "idk_dpo", "--idk-answer", " [gone]"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads((out / UNLEARN_RECORD).read_text())["config"]["idk_answers"] == [" [gone]"]
