"""``memaudit unlearn``: a new model dir with the forget set removed; the original is never written."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from memaudit.io import rundir as rs
from memaudit.io.atomic import write_text_atomic
from memaudit.io.corpus import load_corpus
from memaudit.io.texts import read_texts
from memaudit.errors import InputError
from memaudit.models.hf import LoadOptions, load_causal_lm
from memaudit.lab.lm import EOS, TrainSettings, random_windows, save_model_dir, token_stream
from .kfac import collect_factors, curvature_edit, mlp_layers
from .loop import LoopSettings, unlearn_loop
from .methods import EDIT_METHODS, METHODS

UNLEARN_RECORD = "memaudit_unlearn.json"


@dataclass(frozen=True)
class UnlearnConfig:
    """Settings of ``memaudit unlearn``; see ``memaudit unlearn --help``."""

    model: str
    forget: str
    out: str
    method: str = "npo"
    retain: str | None = None
    retain_chars: int | None = 200_000
    steps: int = 30
    lr: float = 5e-4
    batch_size: int = 16
    retain_batch_size: int = 16
    seq_len: int = 128
    beta: float | None = None
    gamma: float = 0.0
    retain_weight: float = 1.0
    rho: float = 0.8
    layers: str = "all"
    kfac_batches: int = 16
    save_every: int = 0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.method not in EDIT_METHODS:
            METHODS.get(self.method)  # "did you mean" for an unknown name
        if self.save_every < 0 or self.kfac_batches < 1:
            raise InputError("save_every must be >= 0 and kfac_batches >= 1")
        self.loop_settings()

    def loop_settings(self) -> LoopSettings:
        return LoopSettings(
            steps=self.steps, lr=self.lr, batch_size=self.batch_size, retain_batch_size=self.retain_batch_size, seq_len=self.seq_len,
            beta=self.beta, gamma=self.gamma, retain_weight=self.retain_weight, seed=self.seed,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def run_unlearn(config: UnlearnConfig, *, progress=None) -> Path:
    """Unlearn ``config.forget`` from ``config.model`` into ``config.out`` (checkpoints in ``out/step-*``)."""
    src, out = Path(config.model).resolve(), Path(config.out).resolve()
    if out == src or src in out.parents:
        raise InputError("--out must be a new directory outside the original model dir (the original is never written)", path=config.out)
    t0 = time.perf_counter()
    forget_texts = [r.text for r in read_texts(config.forget).records]
    lm = load_causal_lm(config.model, LoadOptions(dtype="float32", device=config.device))
    model, tokenizer = lm.model, lm.tokenizer
    eos = tokenizer.convert_tokens_to_ids(EOS) if EOS in tokenizer.get_vocab() else (tokenizer.eos_token_id or 0)
    forget = [ids + [eos] for ids in lm.encode(forget_texts)]
    retain_batch = _retain_batches(config, tokenizer)
    log: list[dict] = []
    if config.method == "kfac":
        if retain_batch is None:
            raise InputError("the curvature edit needs --retain data to measure curvature on")
        modules = mlp_layers(model, config.layers)
        factors = collect_factors(model, [retain_batch(i) for i in range(config.kfac_batches)], modules, progress=progress)
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
                _save(model, tokenizer, out / f"step-{step:05d}", config, lm, log, t0, step=step)

        unlearn_loop(model, forget, retain_batch, method, config.loop_settings(), pad_id=eos, on_step=on_step)
    return _save(model, tokenizer, out, config, lm, log, t0, step=config.steps if config.method != "kfac" else 0)


def _retain_batches(config: UnlearnConfig, tokenizer):
    if config.retain is None:
        return None
    docs = load_corpus(config.retain, max_chars=config.retain_chars, seed=config.seed)
    settings = TrainSettings(steps=1, batch_size=config.retain_batch_size, seq_len=config.seq_len, seed=config.seed + 1)
    return random_windows(token_stream(tokenizer, docs), settings)


def _save(model, tokenizer, out: Path, config: UnlearnConfig, lm, log: list[dict], t0: float, *, step: int) -> Path:
    record = {
        "schema_version": rs.SCHEMA_VERSION,
        "command": "unlearn",
        "config": config.to_dict(),
        "method": config.method,
        "step": step,
        "original": {"path": str(config.model), "fingerprint": lm.fingerprint},
        **rs.environment(),
        "log": log,
        "seconds": time.perf_counter() - t0,
    }
    path = save_model_dir(model, tokenizer, out, keep=[p.name for p in out.glob("step-*")] if out.exists() else [])
    write_text_atomic(path / UNLEARN_RECORD, json.dumps(rs.jsonable(record), indent=2) + "\n")
    return path
