"""``memaudit probe order``: how a sample's place in training changes its memorization, retrained
(the truth, cheap for lab-sized models) next to the estimate from one recorded run
(:mod:`memaudit.lab.order`, after FUT).

Held-out sequences ("samples") are written into a reference order at known steps; every other
position of a sample is an alternative order that swaps the sample's rows with that step's
rows, so every order trains on exactly the same sequences. Memorization is the sample's mean
token loss at the end of training (lower = more memorized). Definitions: docs/order.md.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.corpus import load_corpus
from memaudit.lab.insertion import Schedule
from memaudit.lab.lm import (
    SIZES,
    TrainSettings,
    build_model,
    fit,
    token_stream,
    train_bpe_tokenizer,
)
from memaudit.lab.order import (
    Order,
    RandomProjection,
    parameter_vector,
    record,
    swap_rows,
    use_eager_attention,
)

from .config import OrderConfig


def sample_loss(model, ids: torch.Tensor) -> torch.Tensor:
    """Mean token NLL of one sequence ``ids`` (T,), as the training loss counts it."""
    return model(input_ids=ids[None], labels=ids[None]).loss


def _data(config: OrderConfig):
    if config.size not in SIZES:
        raise InputError(f"unknown model size '{config.size}' (known: {', '.join(SIZES)})")
    docs = load_corpus(config.corpus, max_chars=config.corpus_chars, seed=config.seed).docs
    if not docs:
        raise InputError(f"corpus {config.corpus} has no documents")
    tokenizer = train_bpe_tokenizer(docs, vocab_size=config.vocab_size)
    stream = token_stream(tokenizer, docs)
    held = config.samples * config.seq_len
    if len(stream) < held + config.batch_size * config.seq_len:
        raise InputError(
            f"corpus {config.corpus} gives {len(stream)} tokens; {held} held-out sample tokens "
            f"plus one batch ({config.batch_size * config.seq_len}) needed: raise --corpus-chars"
        )
    # the samples are the stream's last tokens, which training (the rest, cyclically) never reads
    samples = torch.from_numpy(stream[-held:].copy()).view(config.samples, config.seq_len)
    return tokenizer, stream[:-held], samples


def _reference(config: OrderConfig, stream: np.ndarray, samples: torch.Tensor):
    """The reference order's batches, each sample's rows and its reference step."""
    schedule = Schedule(
        stream, steps=config.steps, batch_size=config.batch_size, seq_len=config.seq_len
    )
    pos_steps = [config.position_step(p) for p in config.positions]
    rows = {
        j: tuple(range(j * config.copies, (j + 1) * config.copies)) for j in range(len(samples))
    }
    ref_step = {j: pos_steps[j % len(pos_steps)] for j in range(len(samples))}

    def batch_at(step: int) -> torch.Tensor:
        b = schedule.batch(step)  # (B, T)
        for j, s in ref_step.items():
            if s == step:
                b[list(rows[j])] = samples[j]
        return b

    return batch_at, rows, ref_step, pos_steps


def _orders(batch_at, rows, ref_step, pos_steps) -> list[tuple[int, int, Order]]:
    out = []
    for j, s_ref in ref_step.items():
        for s in pos_steps:
            if s != s_ref:
                name = f"s{j}@{s}"
                out.append(
                    (j, s, swap_rows(batch_at, name=name, rows=rows[j], step_a=s_ref, step_b=s))
                )
    return out


def _fresh_model(tokenizer, config: OrderConfig, init: dict):
    model = build_model(tokenizer, size=config.size, context=config.seq_len, seed=config.seed)
    model.load_state_dict(init)
    use_eager_attention(model)
    return model


def _load_vector(model, vec: torch.Tensor) -> None:
    torch.nn.utils.vector_to_parameters(vec, [p for p in model.parameters() if p.requires_grad])


def _correlations(truth: np.ndarray, est: np.ndarray) -> dict:
    from scipy.stats import pearsonr, spearmanr

    ok = bool(len(truth) >= 3 and np.std(truth) > 0 and np.std(est) > 0)
    return {
        "n": int(len(truth)),
        "pearson": float(pearsonr(truth, est)[0]) if ok else None,
        "spearman": float(spearmanr(truth, est)[0]) if ok else None,
        "mae": float(np.mean(np.abs(truth - est))),
        "sign_agreement": float(np.mean(np.sign(truth) == np.sign(est))),
    }


def run_order(config: OrderConfig, *, progress=None) -> tuple[Path, dict]:
    """Retrain every order, estimate it from one recorded run, write the run dir."""
    t0 = time.perf_counter()
    tokenizer, stream, samples = _data(config)
    batch_at, rows, ref_step, pos_steps = _reference(config, stream, samples)
    orders = _orders(batch_at, rows, ref_step, pos_steps)
    settings = TrainSettings(
        steps=config.steps,
        batch_size=config.batch_size,
        seq_len=config.seq_len,
        lr=config.lr,
        warmup=config.warmup,
        seed=config.seed,
    )
    run = rs.RunDir.begin(config.out, "probe order", config)
    init = build_model(
        tokenizer, size=config.size, context=config.seq_len, seed=config.seed
    ).state_dict()
    init = copy.deepcopy(init)
    taylor = (1, 2) if config.second_order else (1,)

    def tick(stage, total):
        def on_step(step, loss):
            if progress:
                progress(stage, step, total, f"loss {loss:.3f}")

        return on_step

    t_rec = time.perf_counter()
    model = _fresh_model(tokenizer, config, init)
    rec = record(
        model,
        batch_at,
        settings,
        [o for _, _, o in orders],
        taylor=taylor,
        on_step=tick("recorded reference run", config.steps),
    )
    t_rec = time.perf_counter() - t_rec
    theta = parameter_vector(model)
    proj = RandomProjection(theta.numel(), config.projection_dim, seed=config.seed)
    scratch = copy.deepcopy(model)
    ref_nll, ref_grad = {}, {}
    for j in range(len(samples)):
        loss = sample_loss(model, samples[j])
        ref_nll[j] = float(loss.detach())
        ref_grad[j] = torch.cat(
            [g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))]
        ).detach()
    # what is stored: k floats per target gradient and per order's parameter change, all
    # projected in one pass (the projection regenerates its matrix on every call)
    keys = [(o.name, k) for _, _, o in orders for k in taylor]
    projected = proj(torch.stack([*ref_grad.values(), *(rec.deltas[key] for key in keys)]))
    ref_grad_p = dict(zip(ref_grad, projected[: len(ref_grad)], strict=True))  # (k,) each
    delta_p = dict(zip(keys, projected[len(ref_grad) :], strict=True))

    t_re = time.perf_counter()
    truth = {}
    for i, (j, _, order) in enumerate(orders):
        m = _fresh_model(tokenizer, config, init)
        fit(m, order.batch_at(batch_at), settings)
        with torch.no_grad():
            truth[order.name] = float(sample_loss(m, samples[j]))
        if progress:
            progress("retrained orders", i + 1, len(orders), order.name)
    t_re = time.perf_counter() - t_re

    table: dict[str, list] = {
        k: [] for k in ("sample", "position", "step", "reference_step", "reference", "truth_nll")
    }
    for k in taylor:
        for col in ("estimate", "linear", "linear_unprojected"):
            table[f"{col}_t{k}"] = []
    table["reference_nll"] = []
    for j in range(len(samples)):
        for frac, s in zip(config.positions, pos_steps, strict=True):
            name = None if s == ref_step[j] else f"s{j}@{s}"
            table["sample"].append(j)
            table["position"].append(float(frac))
            table["step"].append(s)
            table["reference_step"].append(ref_step[j])
            table["reference"].append(name is None)
            table["truth_nll"].append(ref_nll[j] if name is None else truth[name])
            table["reference_nll"].append(ref_nll[j])
            for k in taylor:
                if name is None:  # the reference order itself: no change to estimate
                    est = lin = lin_u = ref_nll[j]
                else:
                    delta = rec.deltas[(name, k)]
                    _load_vector(scratch, theta + delta)
                    with torch.no_grad():
                        est = float(sample_loss(scratch, samples[j]))
                    lin = ref_nll[j] + float(ref_grad_p[j] @ delta_p[(name, k)])
                    lin_u = ref_nll[j] + float(ref_grad[j].double() @ delta.double())
                table[f"estimate_t{k}"].append(est)
                table[f"linear_t{k}"].append(lin)
                table[f"linear_unprojected_t{k}"].append(lin_u)
    run.write_scores(table)
    results = {
        **run.header({}),
        "data": {
            "corpus": config.corpus,
            "training_tokens": int(len(stream)),
            "samples": len(samples),
            "orders": len(orders),
            "parameters": int(theta.numel()),
            "position_steps": pos_steps,
        },
        "measures": _measures(table, taylor),
        "reference_final_loss": rec.losses[-1],
        "timings_s": {
            "recorded_run": t_rec,
            "retraining": t_re,
            "retraining_per_order": t_re / max(1, len(orders)),
            "total": time.perf_counter() - t0,
        },
    }
    render = None
    if config.report:
        from memaudit.report.order import write_order_report

        render = write_order_report
    run.finish(results, render)
    return run.path, results


def _measures(table: dict, taylor) -> dict:
    """Each estimate against the truth: over every (sample, position), and over the moved
    rows as the change from the reference order (the position effect itself)."""
    truth = np.array(table["truth_nll"])
    ref = np.array(table["reference_nll"])
    moved = ~np.array(table["reference"])
    out: dict[str, dict] = {}
    columns = [f"{c}_t{k}" for k in taylor for c in ("estimate", "linear", "linear_unprojected")]
    for col in columns:
        est = np.array(table[col])
        out[col] = {
            "all_rows": _correlations(truth, est),
            "position_effect": _correlations(truth[moved] - ref[moved], est[moved] - ref[moved]),
        }
    # the floor: no order effect at all (every order = the reference), against all rows
    out["no_effect_baseline"] = {"all_rows": _correlations(truth, ref)}
    eff = truth[moved] - ref[moved]
    out["truth_position_effect"] = {
        "mean": float(eff.mean()) if len(eff) else math.nan,
        "std": float(eff.std()) if len(eff) else math.nan,
        "max_abs": float(np.abs(eff).max()) if len(eff) else math.nan,
    }
    return out
