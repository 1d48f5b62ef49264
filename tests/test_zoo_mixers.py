"""The zoo's mixers: recurrent = parallel, state counts, causality, the model dir, bad input.

Every test that is parametrized over ``MIXERS.names()`` runs for a newly registered mixer too,
so a mixer without its checks fails here.
"""

from __future__ import annotations

import json

import pytest
import torch

from memaudit.errors import InputError, ModelLoadError
from memaudit.probes.zoo import MIXERS, ZooConfig, ZooLM, load_zoo_model, save_zoo_model
from memaudit.probes.zoo.common import state_numel

D, T, B = 32, 24, 2
# small knobs, so windows and segments are shorter than T and the carried state is exercised
SMALL_STATE = {"sliding_window": 5, "linear_attention": 8, "based": 4, "memory_caching": 7}


def config(arch: str, **kw) -> ZooConfig:
    base = dict(arch=arch, vocab=40, d_model=D, n_layers=2, n_heads=2, max_len=64)
    base["state"] = SMALL_STATE.get(arch)
    if arch in ("based", "titans"):
        base["window"] = 6
    return ZooConfig(**{**base, **kw})


def mixer(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = config(arch).check()
    return cfg.spec.build(cfg).double().eval()  # float64 here: the forms' algebra, not rounding


def run_steps(m, x: torch.Tensor):
    state = m.init_state(x.shape[0])
    ys = []
    for t in range(x.shape[1]):
        y, state = m.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


RECURRENT = [a for a in MIXERS.names() if MIXERS.get(a).recurrent]


@pytest.mark.parametrize("arch", RECURRENT)
def test_recurrent_form_equals_parallel_form(arch):
    m = mixer(arch)
    x = torch.randn(B, T, D, dtype=torch.float64)
    with torch.no_grad():
        parallel = m(x)
        recurrent, _ = run_steps(m, x)
    torch.testing.assert_close(recurrent, parallel, atol=1e-5, rtol=1e-5)
    m = m.float()  # and in the float32 the models train in
    with torch.no_grad():
        torch.testing.assert_close(run_steps(m, x.float())[0], m(x.float()), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", RECURRENT)
@pytest.mark.parametrize("length", [1, T])
def test_state_count_is_the_carried_tensors(arch, length):
    m = mixer(arch)
    with torch.no_grad():
        _, state = run_steps(m, torch.randn(B, length, D, dtype=torch.float64))
    assert m.state_floats(length) == state_numel(state)


@pytest.mark.parametrize("arch", MIXERS.names())
def test_no_mixer_reads_a_later_token(arch):
    m = mixer(arch)
    x = torch.randn(B, T, D, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
    for t in (0, T // 2 + 1):
        x2 = x.clone()
        x2[:, t] += torch.randn(B, D, dtype=torch.float64)
        with torch.no_grad():
            y2 = m(x2)
        torch.testing.assert_close(y2[:, :t], y[:, :t], atol=1e-10, rtol=0)
        assert not torch.allclose(y2[:, t:], y[:, t:])  # it does read token t


def test_attention_state_is_the_kv_cache_at_the_length():
    cfg = config("attention")
    model = ZooLM(cfg)
    conv = (cfg.short_conv - 1) * D  # the short convolution's last inputs
    assert model.state_floats(T) == cfg.n_layers * (2 * T * D + conv)
    assert ZooLM(config("attention", short_conv=0)).state_floats(T) == cfg.n_layers * 2 * T * D


def test_short_convolution_step_equals_its_parallel_form_and_is_causal():
    from memaudit.probes.zoo.model import ShortConv

    torch.manual_seed(0)
    conv = ShortConv(D, 4).double()
    h = torch.randn(B, T, D, dtype=torch.float64)
    with torch.no_grad():
        y = conv(h)
        state, steps = conv.init_state(B), []
        for t in range(T):
            y_t, state = conv.step(h[:, t], state)
            steps.append(y_t)
        h2 = h.clone()
        h2[:, 5] += 1.0
        y2 = conv(h2)
    torch.testing.assert_close(torch.stack(steps, dim=1), y, atol=1e-10, rtol=0)
    assert state_numel(state) == conv.state_floats() == 3 * D
    torch.testing.assert_close(y2[:, :5], y[:, :5], atol=0, rtol=0)


@pytest.mark.parametrize("arch", MIXERS.names())
def test_model_shape_and_save_load_round_trip(arch, tmp_path):
    torch.manual_seed(0)
    model = ZooLM(config(arch, n_layers=1)).eval()
    ids = torch.randint(0, 40, (B, T))
    with torch.no_grad():
        logits = model(ids)
    assert logits.shape == (B, T, 40) and logits.dtype == torch.float32
    out = save_zoo_model(model, tmp_path / "m", extra={"note": "test"})
    loaded = load_zoo_model(out)
    with torch.no_grad():
        assert torch.equal(loaded(ids), logits)
    record = json.loads((out / "zoo.json").read_text())
    assert record["config"]["arch"] == arch and record["extra"] == {"note": "test"}
    assert loaded.state_floats(T) == model.state_floats(T)


def test_unknown_arch_suggests_the_closest():
    with pytest.raises(InputError, match="did you mean 'linear_attention'"):
        ZooConfig(arch="linear_atention").check()


@pytest.mark.parametrize(
    "arch, kw, match",
    [
        ("sliding_window", {"state": 0}, "at least 1"),
        ("linear_attention", {"state": 0}, "at least 1"),
        ("linear_attention", {"state": 17}, "at most head_dim 16"),
        ("based", {"state": 17}, "at most head_dim 16"),
        ("based", {"window": 0}, "window must be at least 1"),
        ("gla", {"state": 0}, "at least 1"),
        ("deltanet", {"state": -2}, "at least 1"),
        ("titans", {"state": 0}, "at least 1"),
        ("memory_caching", {"state": 0}, "at least 1"),
        ("sliding_window", {"state": 4.5}, "integer"),
        ("attention", {"state": 8}, "no state knob"),
        ("attention", {"n_heads": 3}, "does not divide"),
        ("attention", {"d_model": 30, "n_heads": 2}, "even head dim"),
    ],
)
def test_a_state_the_arch_cannot_have(arch, kw, match):
    with pytest.raises(InputError, match=match) as e:
        config(arch, **kw).check()
    assert "\n" not in str(e.value)


def test_load_refuses_a_dir_that_is_not_a_zoo_model(tmp_path):
    with pytest.raises(ModelLoadError, match="not a memaudit zoo model"):
        load_zoo_model(tmp_path)
    (tmp_path / "zoo.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_zoo_model(tmp_path)
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_zoo_model(tmp_path / "missing")


def test_load_refuses_weights_of_another_arch(tmp_path):
    out = save_zoo_model(ZooLM(config("linear_attention")), tmp_path / "m")
    record = json.loads((out / "zoo.json").read_text())
    record["config"]["arch"], record["config"]["state"] = "attention", None
    (out / "zoo.json").write_text(json.dumps(record))
    with pytest.raises(ModelLoadError, match="do not fit attention"):
        load_zoo_model(out)


@pytest.mark.parametrize("arch", MIXERS.names())
def test_a_few_training_steps_lower_the_loss(arch):
    torch.manual_seed(0)
    model = ZooLM(config(arch, n_layers=1))
    # a sequence that repeats: learnable from context by every mixer
    ids = torch.randint(0, 40, (4, 8)).repeat(1, 3)  # (4, 24)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 40), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
