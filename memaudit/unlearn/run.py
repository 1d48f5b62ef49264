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
from memaudit.lab.lm import (
    EOS,
    TrainSettings,
    random_windows,
    save_model_dir,
    token_stream,
)
from memaudit.models.hf import LoadOptions, load_causal_lm
from memaudit.models.sources import FILES, Sources

from .config import UnlearnConfig
from .curve import EVAL_FILE, EvalSet, describe_point, evaluate_now, prompt_length
from .idk import alternative_sequences
from .kfac import collect_factors, curvature_edit, mlp_layers
from .loop import unlearn_loop
from .lora import (
    ADAPTER_DIR,
    ADAPTER_KIND,
    attach_lora,
    lora_summary,
    lora_targets,
    merged_copy,
    save_adapter,
)
from .methods import METHODS
from .rmu import Steering

UNLEARN_RECORD = "memaudit_unlearn.json"


def run_unlearn(config: UnlearnConfig, *, progress=None, sources: Sources = FILES) -> Path:
    """Unlearn ``config.forget`` from ``config.model`` into ``config.out`` (checkpoints in
    ``out/step-*``, the ``--eval-every`` curve in ``out/eval.jsonl``, a ``--keep-adapter``
    adapter in ``out/adapter``). ``sources``: forget and holdout texts the API was given by
    name (the model is always a dir: its training record names what to retrain).

    Inputs are read and checked (data, model, LoRA targets, the method's needs) before ``out``
    is written.
    """
    src, out = Path(config.model).resolve(), Path(config.out).resolve()
    if out == src or src in out.parents:
        raise InputError(
            "--out must be a new directory outside the original model dir (the original is never "
            "written)",
            path=config.out,
        )
    t0 = time.perf_counter()
    read = sources.read_texts(config.forget, skip_invalid=config.skip_invalid)
    forget_texts = [r.text for r in read.records]
    holdout = sources.read_texts(config.holdout).records if config.holdout else None
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
        "holdout": {"texts": len(holdout)} if holdout is not None else None,
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
        "lora": None,
        **rs.environment(),
    }
    eos = (
        tokenizer.convert_tokens_to_ids(EOS)
        if EOS in tokenizer.get_vocab()
        else (tokenizer.eos_token_id or 0)
    )
    encoded = lm.encode(forget_texts)
    forget = [ids + [eos] for ids in encoded]
    stream = token_stream(tokenizer, retain.docs) if retain else None
    retain_batch = _retain_batches(config, stream) if stream is not None else None
    kfac_batches, alternatives, steering = [], None, None
    if config.method == "kfac":
        if retain_batch is None:
            raise InputError("the curvature edit needs --retain data to measure curvature on")
        kfac_batches = [retain_batch(i) for i in range(config.kfac_batches)]
    else:
        method = METHODS.get(config.method)
        if method.needs_retain and retain_batch is None:
            raise InputError(f"method '{config.method}' needs --retain data")
        alternatives, steering = _method_inputs(config, method, lm, read.records, encoded, eos)
        if steering is not None:
            base["steering"] = steering.describe()
    if config.lora_rank:
        targets = lora_targets(model, config.lora_targets)
        model = attach_lora(
            model, rank=config.lora_rank, alpha=config.alpha, targets=targets, base_path=str(src)
        )
        base["lora"] = {  # "adapter": the kept adapter's dir, in the final record only
            **lora_summary(model, rank=config.lora_rank, alpha=config.alpha, targets=targets),
            "adapter": None,
        }
    modules = mlp_layers(model, config.layers) if config.method == "kfac" else {}
    inputs = [config.model, config.forget, config.retain, config.holdout]
    prepare_out_dir(out, kind="model:unlearn", inputs=inputs, overwrite=config.overwrite)
    _clear_earlier_outputs(out)
    log: list[dict] = []
    if config.method == "kfac":
        factors = collect_factors(model, kfac_batches, modules, progress=progress)
        edit = curvature_edit(modules, factors, config.rho)
        log.append({"edit": edit})
        return _save(model, tokenizer, out, base, log, t0, step=0)
    evaluate = (
        _curve(config, lm, read.records, encoded, holdout, stream, eos, out, base, progress)
        if config.eval_every
        else None
    )
    if evaluate is not None:
        evaluate(model, 0)

    def on_step(step, entry):
        log.append(entry)
        if progress:
            progress("unlearning", step, config.steps, f"forget NLL {entry['forget_nll']:.2f}")
        if evaluate is not None and (step % config.eval_every == 0 or step == config.steps):
            evaluate(model, step)
        if config.save_every and step % config.save_every == 0 and step < config.steps:
            _save(
                _plain(model, config), tokenizer, out / f"step-{step:05d}", base, log, t0, step=step
            )

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
    if config.lora_rank:
        if config.keep_adapter:
            save_adapter(model, out)
        base["lora"]["adapter"] = ADAPTER_DIR if config.keep_adapter else None
        model = model.merge_and_unload()  # the output is the merged model
    return _save(model, tokenizer, out, base, log, t0, step=config.steps)


def _clear_earlier_outputs(out: Path) -> None:
    """An earlier run's checkpoints, curve and adapter must not pass for this run's."""
    for old in out.glob("step-*"):
        if made_by_memaudit(old, "model:unlearn"):
            shutil.rmtree(old)
    if made_by_memaudit(out / ADAPTER_DIR, ADAPTER_KIND):
        shutil.rmtree(out / ADAPTER_DIR)
    if made_by_memaudit(out, "model:unlearn"):
        (out / EVAL_FILE).unlink(missing_ok=True)


def _plain(model, config: UnlearnConfig):
    """The model a checkpoint saves: under LoRA a merged copy (training goes on with adapters)."""
    return merged_copy(model) if config.lora_rank else model


def _curve(config, lm, records, encoded, holdout, stream, eos, out: Path, base: dict, progress):
    """The ``--eval-every`` evaluation: fixed sets, and a function that adds one point to
    ``base["eval"]`` and rewrites ``out/eval.jsonl``."""
    settings = TrainSettings(
        steps=1,
        batch_size=config.eval_retain_windows,
        seq_len=config.seq_len,
        seed=config.seed + 2,  # other windows than the training batches (seed + 1)
    )
    data = EvalSet(
        forget=encoded,
        prompts=[
            prompt_length(lm.tokenizer, r, ids, config.eval_prefix_tokens)
            for r, ids in zip(records, encoded)
        ],
        holdout=lm.encode([r.text for r in holdout]) if holdout is not None else None,
        retain=random_windows(stream, settings)(0) if stream is not None else None,
        suffix_tokens=config.eval_suffix_tokens,
        batch_size=config.batch_size,
        pad_id=eos,
    )
    base["eval"], base["eval_notes"] = [], data.notes()

    def evaluate(model, step: int) -> None:
        point = evaluate_now(model, data, step)
        base["eval"].append(point)
        lines = "".join(json.dumps(rs.jsonable(p)) + "\n" for p in base["eval"])
        write_text_atomic(out / EVAL_FILE, lines)
        if progress:
            progress(f"eval @ step {step}", 1, 1, describe_point(point))

    return evaluate


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


def _retain_batches(config: UnlearnConfig, stream):
    settings = TrainSettings(
        steps=1, batch_size=config.retain_batch_size, seq_len=config.seq_len, seed=config.seed + 1
    )
    return random_windows(stream, settings)


def _save(
    model, tokenizer, out: Path, base: dict, log: list[dict], t0: float, *, step: int
) -> Path:
    """The model dir ``out`` with its record: ``base`` (config, original, data) plus the log."""
    record = {**base, "step": step, "log": log, "seconds": time.perf_counter() - t0}
    keep = [p.name for p in out.glob("step-*")] if out.exists() else []
    keep += [n for n in (ADAPTER_DIR, EVAL_FILE) if (out / n).exists()]
    path = save_model_dir(model, tokenizer, out, kind="model:unlearn", keep=keep)
    write_text_atomic(path / UNLEARN_RECORD, json.dumps(rs.jsonable(record), indent=2) + "\n")
    return path
