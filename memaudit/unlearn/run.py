"""``memaudit unlearn``: a new model dir with the forget set removed; the original is never
written.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.atomic import write_text_atomic
from memaudit.io.corpus import load_corpus
from memaudit.io.outdir import made_by_memaudit, prepare_out_dir
from memaudit.io.texts import read_texts
from memaudit.lab.lm import (
    EOS,
    TrainSettings,
    random_windows,
    save_model_dir,
    token_stream,
)
from memaudit.models.hf import LoadOptions, load_causal_lm

from .config import UnlearnConfig
from .idk import alternative_sequences
from .kfac import collect_factors, curvature_edit, mlp_layers
from .loop import unlearn_loop
from .methods import METHODS
from .rmu import Steering

UNLEARN_RECORD = "memaudit_unlearn.json"


def run_unlearn(config: UnlearnConfig, *, progress=None) -> Path:
    """Unlearn ``config.forget`` from ``config.model`` into ``config.out`` (checkpoints in
    ``out/step-*``).
    """
    src, out = Path(config.model).resolve(), Path(config.out).resolve()
    if out == src or src in out.parents:
        raise InputError(
            "--out must be a new directory outside the original model dir (the original is never "
            "written)",
            path=config.out,
        )
    inputs = [config.model, config.forget, config.retain]
    prepare_out_dir(out, kind="model:unlearn", inputs=inputs, overwrite=config.overwrite)
    for old in out.glob("step-*"):  # an earlier run's checkpoints must not enter this run's curve
        if made_by_memaudit(old, "model:unlearn"):
            shutil.rmtree(old)
    t0 = time.perf_counter()
    read = read_texts(config.forget, skip_invalid=config.skip_invalid)
    forget_texts = [r.text for r in read.records]
    retain = (
        load_corpus(
            config.retain,
            max_chars=config.retain_chars,
            seed=config.seed,
            skip_invalid=config.skip_invalid,
        )
        if config.retain
        else None
    )
    skipped = read.skipped + (retain.skipped if retain else [])
    data = {
        "forget": {"texts": len(forget_texts)},
        "retain": retain.summary() if retain else None,
        "skipped": [s.to_dict() for s in skipped],
    }
    lm = load_causal_lm(config.model, LoadOptions(dtype="float32", device=config.device))
    model, tokenizer = lm.model, lm.tokenizer
    base = {
        "schema_version": rs.SCHEMA_VERSION,
        "command": "unlearn",
        "config": config.to_dict(),
        "method": config.method,
        "original": {"path": str(config.model), "fingerprint": lm.fingerprint},
        "data": data,
        **rs.environment(),
    }
    eos = (
        tokenizer.convert_tokens_to_ids(EOS)
        if EOS in tokenizer.get_vocab()
        else (tokenizer.eos_token_id or 0)
    )
    encoded = lm.encode(forget_texts)
    forget = [ids + [eos] for ids in encoded]
    retain_batch = _retain_batches(config, tokenizer, retain.docs) if retain else None
    log: list[dict] = []
    if config.method == "kfac":
        if retain_batch is None:
            raise InputError("the curvature edit needs --retain data to measure curvature on")
        modules = mlp_layers(model, config.layers)
        factors = collect_factors(
            model, [retain_batch(i) for i in range(config.kfac_batches)], modules, progress=progress
        )
        edit = curvature_edit(modules, factors, config.rho)
        log.append({"edit": edit})
    else:
        method = METHODS.get(config.method)
        if method.needs_retain and retain_batch is None:
            raise InputError(f"method '{config.method}' needs --retain data")

        def on_step(step, entry):
            log.append(entry)
            if progress:
                progress("unlearning", step, config.steps, f"forget NLL {entry['forget_nll']:.2f}")
            if config.save_every and step % config.save_every == 0 and step < config.steps:
                _save(model, tokenizer, out / f"step-{step:05d}", base, log, t0, step=step)

        alternatives, steering = _method_inputs(config, method, lm, read.records, encoded, eos)
        if steering is not None:
            base["steering"] = steering.describe()
        unlearn_loop(
            model,
            forget,
            retain_batch,
            method,
            config.loop_settings(),
            pad_id=eos,
            on_step=on_step,
            alternatives=alternatives,
            steering=steering,
        )
    step = 0 if config.method == "kfac" else config.steps
    return _save(model, tokenizer, out, base, log, t0, step=step)


def _method_inputs(config: UnlearnConfig, method, lm, records, encoded, eos: int):
    """What idk_dpo (alternative sequences) and rmu (a steering) need beside the batches."""
    alternatives = (
        alternative_sequences(
            lm.tokenizer, records, encoded, config.idk_answers, seed=config.seed, eos=eos
        )
        if method.needs_alternatives
        else None
    )
    steering = (
        Steering.build(
            lm.model,
            layer=config.rmu_layer,
            coefficient=config.rmu_steering,
            alpha=config.rmu_alpha,
            seed=config.seed,
        )
        if method.needs_activations
        else None
    )
    return alternatives, steering


def _retain_batches(config: UnlearnConfig, tokenizer, docs: list[str]):
    settings = TrainSettings(
        steps=1, batch_size=config.retain_batch_size, seq_len=config.seq_len, seed=config.seed + 1
    )
    return random_windows(token_stream(tokenizer, docs), settings)


def _save(
    model, tokenizer, out: Path, base: dict, log: list[dict], t0: float, *, step: int
) -> Path:
    """The model dir ``out`` with its record: ``base`` (config, original, data) plus the log."""
    record = {**base, "step": step, "log": log, "seconds": time.perf_counter() - t0}
    keep = [p.name for p in out.glob("step-*")] if out.exists() else []
    path = save_model_dir(model, tokenizer, out, kind="model:unlearn", keep=keep)
    write_text_atomic(path / UNLEARN_RECORD, json.dumps(rs.jsonable(record), indent=2) + "\n")
    return path
