"""``ZooLM``: embedding -> n_layers x (pre-norm short conv + mixer + residual, pre-norm SwiGLU MLP
+ residual) -> final norm -> head; and its model dir (``save_zoo_model`` / ``load_zoo_model``).

The block is the Llama micro model's (SwiGLU at 2x width, an untied head): with a GELU 4x MLP
and the head tied to the embedding, the attention model stayed on the MQAR plateau (accuracy
0.26 after 600 steps at width 64, where the transformers Llama micro reaches 1.0 on the same
batches); SwiGLU alone gave 0.61, SwiGLU with an untied head 1.0.

A zoo model dir holds ``model.safetensors`` (the state dict) and ``zoo.json`` (``format``,
``config``, ``extra``), written in a temp dir and published as a memaudit ``model:zoo`` output.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from memaudit.errors import InputError, ModelLoadError
from memaudit.io.atomic import current_umask
from memaudit.io.outdir import prepare_out_dir, publish_dir

from .specs import ZooConfig

KIND = "model:zoo"
FORMAT = "memaudit-zoo/3"  # 2: SwiGLU MLP, untied head; 3: short convolution
RECORD = "zoo.json"
WEIGHTS = "model.safetensors"


class MLP(nn.Module):
    """SwiGLU (Shazeer 2020), as in Llama: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, mult: int = 2):
        super().__init__()
        self.gate = nn.Linear(d_model, mult * d_model, bias=False)
        self.up = nn.Linear(d_model, mult * d_model, bias=False)
        self.down = nn.Linear(mult * d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x))  # (B, T, D)


class ShortConv(nn.Module):
    """h + a causal depthwise convolution of h over the last ``kernel`` tokens (the short
    convolution of H3, BASED, Mamba and DeltaNet). It hands each token its predecessors'
    features, the previous-token link MQAR's key -> value pairs need: without it every
    recurrent mixer stayed on the plateau of answering some value from the context (0.13-0.14
    after 800 steps, where BASED and sliding-window attention, which can attend to the previous
    token, reached 0.85-0.99). Its recurrent state: the last ``kernel - 1`` inputs.
    """

    def __init__(self, d_model: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(d_model, d_model, kernel, groups=d_model, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        padded = nn.functional.pad(h.transpose(1, 2), (self.kernel - 1, 0))  # (B, D, T + k - 1)
        return h + self.conv(padded).transpose(1, 2)  # (B, T, D)

    def init_state(self, batch: int) -> torch.Tensor:
        w = self.conv.weight
        return torch.zeros(batch, w.shape[0], self.kernel - 1, dtype=w.dtype, device=w.device)

    def step(self, h_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        window = torch.cat([state, h_t[:, :, None]], dim=2)  # (B, D, k)
        y = h_t + (window * self.conv.weight[:, 0]).sum(-1)
        return y, window[:, :, 1:]

    def state_floats(self) -> int:
        return (self.kernel - 1) * self.conv.weight.shape[0]


class Block(nn.Module):
    """x + mixer(conv(norm(x))), then + mlp(norm(x))."""

    def __init__(self, cfg: ZooConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model)
        self.conv = ShortConv(cfg.d_model, cfg.short_conv) if cfg.short_conv else None
        self.mixer = cfg.spec.build(cfg)
        self.norm2 = nn.RMSNorm(cfg.d_model)
        self.mlp = MLP(cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        if self.conv is not None:
            h = self.conv(h)
        x = x + self.mixer(h)  # (B, T, D)
        return x + self.mlp(self.norm2(x))


class ZooLM(nn.Module):
    """A language model over ids ``0..cfg.vocab-1`` whose token mixer is ``cfg.arch``.

    ``forward(ids (B, T)) -> logits (B, T, vocab)`` float32. No position embedding: the
    attention mixers use RoPE, the recurrent ones see order through their recurrence.
    """

    def __init__(self, cfg: ZooConfig):
        super().__init__()
        self.cfg = cfg.check()
        self.embed = nn.Embedding(cfg.vocab, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        self.apply(_init)

    @property
    def mixers(self) -> list[Any]:
        return [b.mixer for b in self.blocks]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.cfg.max_len:
            raise InputError(
                f"sequence of {ids.shape[1]} tokens exceeds max_len {self.cfg.max_len}"
            )
        x = self.embed(ids)  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)).float()  # (B, T, V)

    def state_floats(self, seq_len: int) -> int:
        """Recurrent state per sequence after ``seq_len`` tokens, summed over layers: each
        mixer's and each short convolution's."""
        convs = [b.conv for b in self.blocks if isinstance(b.conv, ShortConv)]
        return sum(m.state_floats(seq_len) for m in self.mixers) + sum(
            c.state_floats() for c in convs
        )


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)


def save_zoo_model(
    model: ZooLM, out_dir: str | Path, *, extra: dict | None = None, overwrite: bool = False
) -> Path:
    """Write ``model`` as a zoo model dir (checked with ``prepare_out_dir``, then a temp dir
    published in place)."""
    from safetensors.torch import save_file

    out = prepare_out_dir(out_dir, kind=KIND, overwrite=overwrite)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS))
        record = {"format": FORMAT, "config": asdict(model.cfg), "extra": extra or {}}
        (tmp / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
        publish_dir(tmp, out, KIND)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_zoo_record(model_dir: str | Path) -> dict:
    """``zoo.json`` of a zoo model dir; ``ModelLoadError`` for a dir that is not one."""
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelLoadError(f"{d}: not a directory (a zoo model dir holds {RECORD} and {WEIGHTS})")
    f = d / RECORD
    if not f.is_file():
        raise ModelLoadError(
            f"{d}: no {RECORD}, not a memaudit zoo model (probe recall-train --arch)"
        )
    try:
        record = json.loads(f.read_text())
    except (ValueError, OSError) as e:
        raise ModelLoadError(f"{f}: unreadable ({e.__class__.__name__})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ModelLoadError(f"{f}: not a {FORMAT} record")
    return record


def load_zoo_model(model_dir: str | Path) -> ZooLM:
    """The ``ZooLM`` saved in ``model_dir``, in eval mode, on the CPU."""
    from safetensors.torch import load_file

    from memaudit.models.weights import check_safetensors

    d = Path(model_dir)
    record = read_zoo_record(d)
    try:
        cfg = ZooConfig(**record["config"]).check()
    except (TypeError, KeyError, InputError) as e:
        raise ModelLoadError(f"{d / RECORD}: bad config: {e}") from None
    weights = d / WEIGHTS
    if not weights.is_file():
        raise ModelLoadError(f"{d}: no {WEIGHTS}")
    check_safetensors([weights])
    model = ZooLM(cfg)
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ModelLoadError(f"{weights}: weights do not fit {cfg.arch}: {first}") from None
    return model.eval()
