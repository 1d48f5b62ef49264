"""``memaudit train``: a small GPT-2 trained from scratch with canaries inserted at known counts.

The out dir becomes a standard model dir (safetensors + tokenizer) plus ``ledger.jsonl``
(the input ledger with every insertion's step, row and offset) and ``memaudit_train.json``
(the whole config, versions, losses), which is written last: its presence means the run
finished. A run killed midway resumes from its last checkpoint when started again with the
same config and gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from memaudit.io import rundir as rs
from memaudit.io.atomic import write_text_atomic
from .canaries import read_ledger, with_insertions, write_ledger
from memaudit.io.corpus import load_corpus
from memaudit.errors import InputError
from .insertion import Schedule, canary_tokens, plan_insertions
from memaudit.models.hf import LoadOptions
from .lm import EOS, SIZES, TrainSettings, build_model, fit, make_optimizer, token_stream, train_bpe_tokenizer

TRAIN_RECORD = "memaudit_train.json"
Progress = Callable[..., None]  # (stage, done, total, note="")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``memaudit train``; see ``memaudit train --help``."""

    corpus: str
    out: str
    ledger: str | None = None
    model_size: str = "tiny"
    steps: int = 300
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 1e-3
    warmup: int = 20
    vocab_size: int = 4096
    context: int = 256
    corpus_chars: int | None = None
    seed: int = 0
    checkpoint_every: int = 50
    init_from: str | None = None
    device: str = "auto"  # auto: CUDA when present; training is always float32

    def __post_init__(self):
        if self.model_size not in SIZES:
            raise InputError(f"unknown model size '{self.model_size}' (known: {', '.join(SIZES)})")
        if self.checkpoint_every < 0 or self.vocab_size < 300:
            raise InputError("checkpoint_every must be >= 0 and vocab_size >= 300")
        if self.seq_len > self.context:
            raise InputError(f"seq_len {self.seq_len} exceeds the model context {self.context}")
        self.settings()  # checks steps, batch_size, seq_len

    def settings(self) -> TrainSettings:
        return TrainSettings(
            steps=self.steps, batch_size=self.batch_size, seq_len=self.seq_len, lr=self.lr, warmup=self.warmup, seed=self.seed
        )

    def identity(self) -> str:
        """Hash of everything that decides the weights: the settings and the ledger's content, not paths."""
        ledger = hashlib.sha256(Path(self.ledger).read_bytes()).hexdigest() if self.ledger else None
        ident = {**asdict(self), "out": None, "ledger": ledger}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def run_train(config: TrainConfig, *, progress: Progress | None = None) -> Path:
    """Train (or resume, or return at once if this exact run already finished) and write the model dir."""
    out = Path(config.out)
    if _finished(out, config):
        return out
    canaries = read_ledger(config.ledger) if config.ledger else []
    docs = load_corpus(config.corpus, max_chars=config.corpus_chars, seed=config.seed)
    t0 = time.perf_counter()
    tokenizer, model = _tokenizer_and_model(config, out, docs)
    model.to(LoadOptions(device=config.device).resolve_device())
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    tokens = canary_tokens(tokenizer, [c for c in canaries if c.member], eos_id)
    plan = plan_insertions(
        canaries, tokens, steps=config.steps, batch_size=config.batch_size, seq_len=config.seq_len, seed=config.seed
    )
    stream = token_stream(tokenizer, docs)
    schedule = Schedule(
        stream, steps=config.steps, batch_size=config.batch_size, seq_len=config.seq_len, insertions=plan, tokens=tokens
    )

    optimizer = make_optimizer(model, config.settings())
    start = _resume(out, config, model, optimizer)
    losses = []

    def on_step(step, loss):
        losses.append(loss)
        if progress is not None:
            progress("training", step, config.steps, f"loss {loss:.3f}")

    fit(
        model,
        schedule.batch,
        config.settings(),
        optimizer=optimizer,
        start_step=start,
        on_step=on_step,
        checkpoint=lambda step: _save_checkpoint(out, config, model, optimizer, step),
        checkpoint_every=config.checkpoint_every,
    )
    _write_model(out, model, tokenizer)
    by_canary: dict[str, list[dict]] = {}
    for ins in plan:
        by_canary.setdefault(ins.canary, []).append(ins.to_dict())
    if canaries:
        write_ledger(out / "ledger.jsonl", with_insertions(canaries, by_canary))
    record = {
        "schema_version": rs.SCHEMA_VERSION,
        "command": "train",
        "config": asdict(config),
        "identity": config.identity(),
        **rs.environment(),
        "corpus": {"documents": len(docs), "characters": sum(map(len, docs)), "tokens": int(len(stream))},
        "insertions": len(plan),
        "tokens_trained": config.steps * config.batch_size * config.seq_len,
        "resumed_from_step": start,
        "final_loss": losses[-1] if losses else None,
        "losses_this_session": losses,
        "seconds_this_session": time.perf_counter() - t0,
    }
    write_text_atomic(out / TRAIN_RECORD, json.dumps(rs.jsonable(record), indent=2) + "\n")
    for old in [*out.glob("checkpoint-*"), *out.glob(".checkpoint-*.tmp")]:
        shutil.rmtree(old, ignore_errors=True)
    return out


def stored_identity(out: str | Path) -> str | None:
    """The config identity of the (finished or checkpointed) run in ``out``, if any."""
    out = Path(out)
    if (out / TRAIN_RECORD).is_file():
        return json.loads((out / TRAIN_RECORD).read_text()).get("identity")
    found = _checkpoints(out)
    return json.loads((found[-1][1] / "state.json").read_text())["identity"] if found else None


def _finished(out: Path, config: TrainConfig) -> bool:
    if not (out / TRAIN_RECORD).is_file():
        return False
    if stored_identity(out) != config.identity():
        raise InputError(f"{out} holds a finished training run with another config; choose another --out")
    return True


def _tokenizer_and_model(config: TrainConfig, out: Path, docs: list[str]):
    """The tokenizer (reused from the out dir when resuming) and a fresh or loaded model."""
    if config.init_from:
        from memaudit.models.hf import load_causal_lm

        base = load_causal_lm(config.init_from, LoadOptions(dtype="float32", device=config.device))
        model, tokenizer = base.model.float().train(), base.tokenizer
        return tokenizer, model
    if (out / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    else:
        sample, total = [], 0
        for d in docs:  # a few MB is plenty to learn the merges
            sample.append(d)
            total += len(d)
            if total > 3_000_000:
                break
        tokenizer = train_bpe_tokenizer(sample, vocab_size=config.vocab_size)
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(out)
    return tokenizer, build_model(tokenizer, size=config.model_size, context=config.context, seed=config.seed)


def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    found = []
    for d in out.glob("checkpoint-*"):
        if d.is_dir() and (d / "state.json").is_file():
            found.append((int(d.name.split("-")[1]), d))
    return sorted(found)


def _save_checkpoint(out: Path, config: TrainConfig, model, optimizer, step: int) -> None:
    """Weights and optimizer state as safetensors, then rename into place; older checkpoints go."""
    from safetensors.torch import save_file, save_model

    tmp = out / f".checkpoint-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    save_file(optimizer_tensors(optimizer), str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "identity": config.identity()}))
    tmp.rename(out / f"checkpoint-{step:07d}")
    for s, d in _checkpoints(out):
        if s < step:
            shutil.rmtree(d, ignore_errors=True)


def _resume(out: Path, config: TrainConfig, model, optimizer) -> int:
    """Load the newest checkpoint of this config into model and optimizer; its step, or 0."""
    from safetensors.torch import load_model

    found = _checkpoints(out)
    if not found:
        return 0
    step, d = found[-1]
    if stored_identity(out) != config.identity():
        raise InputError(f"{out} holds checkpoints of a run with another config; choose another --out")
    load_model(model, str(d / "model.safetensors"))
    restore_optimizer(optimizer, d / "optimizer.safetensors")
    return step


def optimizer_tensors(optimizer) -> dict[str, torch.Tensor]:
    """An optimizer's per-parameter state as flat tensors ("<param index>.<name>"), to save as safetensors."""
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors


def restore_optimizer(optimizer, path: Path) -> None:
    """Load state saved from ``optimizer_tensors`` (safetensors: no pickle) into ``optimizer``."""
    from safetensors.torch import load_file

    state: dict[int, dict] = {}
    for key, value in load_file(str(path)).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def _write_model(out: Path, model, tokenizer) -> None:
    """The final weights and tokenizer, each file written whole (save to a temp dir, then move in)."""
    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    for f in tmp.iterdir():
        f.replace(out / f.name)
    tmp.rmdir()
