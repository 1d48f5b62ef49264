"""Small GPT-2-style language models trained from scratch, for tests, the demo and lab experiments.

Read top to bottom: train a byte-level BPE tokenizer, build a GPT-2 config of a named size,
pack texts into one token stream, and ``fit`` the model on batches drawn from it (random
windows here; the lab's insertion schedule in :mod:`memaudit.lab.train`). The result is a
standard Hugging Face model directory (safetensors + tokenizer) that every command loads.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from memaudit.errors import InputError
from memaudit.io.atomic import current_umask
from memaudit.io.outdir import publish_dir

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class ModelSize:
    n_layer: int
    n_embd: int
    n_head: int


SIZES = {
    "micro": ModelSize(n_layer=2, n_embd=64, n_head=2),  # tests: trains in seconds
    "tiny": ModelSize(n_layer=4, n_embd=256, n_head=4),  # demo on 2 CPU cores
    "small": ModelSize(n_layer=6, n_embd=384, n_head=6),
    "base": ModelSize(n_layer=12, n_embd=768, n_head=12),
}


@dataclass(frozen=True)
class TrainSettings:
    """Visible defaults for :func:`train_lm`."""

    steps: int = 200
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 1e-3
    warmup: int = 20
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1 or self.seq_len < 2:
            raise InputError("batch_size must be >= 1 and seq_len >= 2")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr must be a positive number, got {self.lr}")
        if self.warmup < 0 or not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError("warmup and weight_decay must be >= 0")


def train_bpe_tokenizer(texts: Sequence[str], *, vocab_size: int = 4096):
    """A byte-level BPE tokenizer trained on ``texts``, as a ``GPT2TokenizerFast``."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast  # type: ignore[attr-defined]  # lazy export

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False
    )
    merges = json.loads(bpe._tokenizer.to_str())["model"]["merges"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]
    # vocab= and merges= in memory: the *_file arguments silently give a 1-token vocabulary
    return GPT2TokenizerFast(
        vocab=bpe.get_vocab(), merges=merges, unk_token=EOS, bos_token=EOS, eos_token=EOS
    )


ARCHS = ("gpt2", "llama")  # learned absolute positions vs rotary (RoPE) positions


def build_model(
    tokenizer, *, size: str = "tiny", context: int = 256, seed: int = 0, arch: str = "gpt2"
):
    """A freshly initialised GPT-2 (learned positions) or Llama-style (RoPE) causal LM of a
    named size.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if size not in SIZES:
        raise InputError(f"unknown model size '{size}' (known: {', '.join(SIZES)})")
    if arch not in ARCHS:
        raise InputError(f"unknown architecture '{arch}' (known: {', '.join(ARCHS)})")
    s = SIZES[size]
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    torch.manual_seed(seed)
    if arch == "llama":
        return LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(tokenizer),
                hidden_size=s.n_embd,
                intermediate_size=2 * s.n_embd,
                num_hidden_layers=s.n_layer,
                num_attention_heads=s.n_head,
                num_key_value_heads=s.n_head,
                max_position_embeddings=context,
                bos_token_id=eos_id,
                eos_token_id=eos_id,
            )
        )
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=context,
        n_embd=s.n_embd,
        n_layer=s.n_layer,
        n_head=s.n_head,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def token_stream(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """All texts tokenized and joined, each followed by the end-of-text token."""
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    ids = tokenizer(list(texts), verbose=False)["input_ids"]
    return np.fromiter((t for doc in ids for t in (*doc, eos_id)), dtype=np.int64)


def random_windows(stream: np.ndarray, settings: TrainSettings) -> Callable[[int], torch.Tensor]:
    """Batches of ``batch_size`` random windows of the stream; batch ``step`` is the same on
    every call.
    """
    if len(stream) < settings.seq_len:
        raise InputError(
            f"corpus has {len(stream)} tokens; at least seq_len = {settings.seq_len} needed"
        )
    data = torch.from_numpy(stream.astype(np.int64))

    def batch_at(step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        starts = torch.randint(
            0, len(data) - settings.seq_len + 1, (settings.batch_size,), generator=gen
        )
        return torch.stack([data[s : s + settings.seq_len] for s in starts])  # (B, T)

    return batch_at


def make_optimizer(model, settings: TrainSettings) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def fit(
    model,
    batch_at: Callable[[int], torch.Tensor],
    settings: TrainSettings,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    start_step: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    checkpoint: Callable[[int], object] | None = None,
    checkpoint_every: int = 0,
) -> list[float]:
    """Train from ``start_step`` to ``settings.steps``; batch ``s`` is ``batch_at(s)``, a (B, T)
    tensor.

    AdamW, gradient clipping at 1.0, linear warm-up then cosine decay to 10%. The learning
    rate is a pure function of the step, so a run resumed from a checkpoint (weights and
    optimizer state) continues exactly as an uninterrupted one. ``on_step(step, loss)`` runs
    after each step; ``checkpoint(step)`` every ``checkpoint_every`` steps.

    Each step's random numbers (dropout, when a model has it: ``--init-from`` a model
    trained with dropout) come from a generator seeded with ``(seed, step)``, so they too
    are the same in a resumed run; the caller's global random state is left as it was.
    """
    optimizer = optimizer or make_optimizer(model, settings)
    device = next(model.parameters()).device
    rng_devices = [device] if device.type == "cuda" else []
    model.train()
    losses = []
    for step in range(start_step, settings.steps):
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(settings.seed * 1_000_003 + step)  # dropout: a function of the step
            batch = batch_at(step).to(device)  # (B, T)
            for group in optimizer.param_groups:
                group["lr"] = settings.lr * _lr_factor(step, settings)
            loss = model(input_ids=batch, labels=batch).loss  # shifted inside: T - 1 targets a row
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, losses[-1])
        if (
            checkpoint is not None
            and checkpoint_every
            and (step + 1) % checkpoint_every == 0
            and step + 1 < settings.steps
        ):
            checkpoint(step + 1)
    model.eval()
    return losses


def _lr_factor(step: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def save_model_dir(
    model,
    tokenizer,
    out_dir: str | Path,
    *,
    kind: str = "model:train",
    extra: dict | None = None,
    records: dict[str, str] | None = None,
    keep: Sequence[str] = (),
) -> Path:
    """Write a model directory atomically (a temp dir renamed into place).

    ``extra`` becomes ``memaudit_train.json``; ``records`` maps other file names to their text
    (e.g. ``memaudit_edit.json``): both are inside the temp dir before it is published, so the
    model and its record appear together or not at all.

    ``keep`` names entries of an existing ``out_dir`` (e.g. checkpoint subdirectories) that
    move into the new one instead of being deleted with the old. Only a directory memaudit
    made for ``kind`` is replaced whole; into any other existing one (which the command let
    through with --overwrite) the new files are moved one by one, and nothing else in it is
    touched.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            (tmp / "memaudit_train.json").write_text(json.dumps(extra, indent=2, default=str))
        for name, text in (records or {}).items():
            (tmp / name).write_text(text)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
        publish_dir(tmp, out, kind, keep=keep)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def train_small_lm(
    texts: Sequence[str],
    out_dir: str | Path,
    *,
    tokenizer=None,
    size: str = "micro",
    context: int = 128,
    vocab_size: int = 1024,
    tokenizer_texts: Sequence[str] | None = None,
    settings: TrainSettings = TrainSettings(),
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Tokenizer (trained unless given) + model + training + model dir, in one call."""
    if tokenizer is None:
        tokenizer = train_bpe_tokenizer(tokenizer_texts or texts, vocab_size=vocab_size)
    model = build_model(tokenizer, size=size, context=context, seed=settings.seed)
    losses = fit(
        model, random_windows(token_stream(tokenizer, texts), settings), settings, on_step=on_step
    )
    extra = {
        "size": size,
        "context": context,
        "settings": asdict(settings),
        "final_loss": losses[-1],
    }
    return save_model_dir(model, tokenizer, out_dir, extra=extra)
