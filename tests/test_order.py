"""The training-order estimate (memaudit.lab.order) against real retraining with fit, the random
projection against the unprojected inner products, and ``memaudit probe order``'s run dir.
"""

from __future__ import annotations

import copy
import json

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from memaudit.cli.app import app
from memaudit.lab.lm import TrainSettings, fit
from memaudit.lab.order import RandomProjection, parameter_vector, record, swap_rows

runner = CliRunner()


@pytest.fixture(scope="module")
def toy():
    """A one-layer GPT-2 in float64 (so small learning rates stay above rounding) and three
    fixed batches; the alternative order swaps the first two whole batches.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=32,
        n_positions=8,
        n_embd=16,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config).double()
    model.set_attn_implementation("eager")
    data = torch.randint(0, 32, (3, 2, 8))  # (steps, B, T)
    return model, (lambda s: data[s])


def _errors(toy, lr: float) -> dict[int, float]:
    """Relative error of each taylor order's estimated final-parameter change vs retraining."""
    init, base = toy
    settings = TrainSettings(steps=3, batch_size=2, seq_len=8, lr=lr, warmup=0)
    order = swap_rows(base, name="swap", rows=(0, 1), step_a=0, step_b=1)
    reference = copy.deepcopy(init)
    rec = record(reference, base, settings, [order], taylor=(1, 2))
    retrained = copy.deepcopy(init)
    fit(retrained, order.batch_at(base), settings)
    true = parameter_vector(retrained) - parameter_vector(reference)  # (d,)
    return {k: float((rec.deltas[("swap", k)] - true).norm() / true.norm()) for k in (1, 2)}


def test_the_estimate_is_exact_to_first_order_and_the_hessian_term_to_second(toy):
    # swapping two steps moves the parameters by O(lr); the estimate's error must be O(lr^2)
    # (relative O(lr)) at taylor 1 and O(lr^3) (relative O(lr^2)) at taylor 2
    big, small = _errors(toy, 1e-4), _errors(toy, 1e-5)
    assert small[1] / big[1] < 0.25, (big, small)
    assert small[2] / big[2] < 0.05, (big, small)
    assert small[2] < small[1] < 0.05


def test_the_projection_keeps_inner_products():
    torch.manual_seed(1)
    d, k = 5000, 2048
    proj = RandomProjection(d, k, seed=3, chunk=1024)  # several chunks of generated columns
    x = torch.randn(6, d, dtype=torch.float64)
    x[1] = x[0] + 0.3 * x[1]  # a correlated pair, as gradients of one sample at two times are
    px = proj(x)  # (6, k)
    exact = x @ x.T
    est = px @ px.T
    bound = 5 * (2 / k) ** 0.5 * torch.outer(x.norm(dim=1), x.norm(dim=1))  # 5 sigma (JL)
    assert torch.all((est - exact).abs() <= bound)
    # the same matrix every call (seeded, not stored), up to the rounding of another batch shape
    assert torch.allclose(proj(x[2]), px[2], rtol=1e-12, atol=1e-12)


def test_the_projected_first_order_loss_matches_the_unprojected(toy):
    init, base = toy
    settings = TrainSettings(steps=3, batch_size=2, seq_len=8, lr=1e-3, warmup=0)
    order = swap_rows(base, name="swap", rows=(1,), step_a=0, step_b=2)
    model = copy.deepcopy(init)
    delta = record(model, base, settings, [order], taylor=(1,)).deltas[("swap", 1)]
    ids = base(0)[1]
    loss = model(input_ids=ids[None], labels=ids[None]).loss
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])
    proj = RandomProjection(grad.numel(), 4096, seed=0)
    exact = float(grad @ delta)
    tol = 5 * (2 / 4096) ** 0.5 * float(grad.norm() * delta.norm())
    assert abs(float(proj(grad) @ proj(delta)) - exact) <= tol


TINY = [
    "--steps", "8", "--samples", "2", "--copies", "1", "--batch-size", "4", "--seq-len", "16",
    "--positions", "0.1,0.6", "--corpus-chars", "20000", "--vocab-size", "300", "--warmup", "1",
    "--projection-dim", "64",
]  # fmt: skip


def test_probe_order_writes_truth_next_to_estimate_and_refuses_other_settings(tmp_path):
    out = tmp_path / "order"
    r = runner.invoke(app, ["probe", "order", *TINY, "--out", str(out)])
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    table = pq.read_table(out / "scores.parquet").to_pydict()
    assert len(table["sample"]) == 2 * 2  # one row per (sample, position)
    for i, is_ref in enumerate(table["reference"]):
        if is_ref:  # the reference order is the recorded run itself: truth = estimate
            assert table["truth_nll"][i] == table["estimate_t2"][i] == table["reference_nll"][i]
    assert results["data"]["orders"] == 2
    assert set(results["measures"]) >= {"estimate_t1", "estimate_t2", "linear_t1"}
    assert "Pearson" in (out / "report.html").read_text()
    before = (out / "results.json").read_text()
    r = runner.invoke(app, ["probe", "order", *TINY, "--lr", "0.002", "--out", str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.stderr
    assert (out / "results.json").read_text() == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--positions", "0.1,0.11"], "each needs its own step"),
        (["--samples", "5"], "do not fit a batch"),
        (["--positions", "0.5"], "at least two fractions"),
        (["--size", "huge"], "unknown model size 'huge'"),
    ],
)
def test_probe_order_bad_input_is_one_line_and_writes_nothing(tmp_path, flags, message):
    out = tmp_path / "order"
    r = runner.invoke(app, ["probe", "order", *TINY, *flags, "--out", str(out)])
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()
