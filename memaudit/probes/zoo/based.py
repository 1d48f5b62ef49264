"""BASED (Arora et al. 2024, "Simple linear attention language models balance the
recall-throughput tradeoff"): linear attention with a 2nd-order Taylor feature map on a small
feature dim, plus a short sliding-window softmax attention.

The Taylor map of a projected query/key x (f dims) is::

    phi(x) = [1, x / f^(1/4), vec(x x^T) / (sqrt(2) sqrt(f))]      (1 + f + f^2 dims)

so phi(q) . phi(k) = 1 + q.k/sqrt(f) + (q.k)^2 / (2 f), the Taylor expansion of exp(q.k/sqrt f)
(always > 0, so the normaliser is safe). In BASED the two kinds of layer alternate (with short
gated convolutions); here one ``based`` mixer runs both branches side by side and adds their
outputs, so each layer's state is the Taylor state plus the window's KV cache::

    n_heads * ((1 + f + f^2) * d_v + 1 + f)  +  2 * min(T, w) * d_model

The short convolutions of BASED are left out. f = ``cfg.state`` (default 16, at most head_dim),
w = ``cfg.window`` (default 64). Where flash-linear-attention is installed and a GPU is present
its ``based`` kernels could compute the linear branch; this CPU path is the reference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import WindowAttention
from .linear import LinearCore
from .specs import ZooConfig


def taylor_features(f: int):
    """The map (..., f) -> (..., 1 + f + f^2) above."""
    r1, r2 = f**0.25, math.sqrt(2.0) * math.sqrt(f)

    def phi(x: torch.Tensor) -> torch.Tensor:
        outer = (x[..., :, None] * x[..., None, :]).flatten(-2)  # (..., f*f)
        return torch.cat([torch.ones_like(x[..., :1]), x / r1, outer / r2], dim=-1)

    return phi


class Based(nn.Module):
    """``based``: Taylor linear attention + sliding-window attention, outputs summed."""

    def __init__(self, cfg: ZooConfig):
        super().__init__()
        f = cfg.state_size
        self.linear = LinearCore(cfg.d_model, cfg.n_heads, f, taylor_features(f), 1 + f + f * f)
        self.window = WindowAttention(cfg.d_model, cfg.n_heads, cfg.window_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.window(x)  # (B, T, D)

    def init_state(self, batch: int) -> dict[str, torch.Tensor]:
        return {**self.linear.init_state(batch), **self.window.init_state(batch)}

    def step(self, x_t: torch.Tensor, state: dict):
        y1, lin = self.linear.step(x_t, {"S": state["S"], "z": state["z"]})
        y2, win = self.window.step(x_t, {"k": state["k"], "v": state["v"]})
        return y1 + y2, {**lin, **win}

    def state_floats(self, seq_len: int) -> int:
        return self.linear.linear_state_floats() + self.window.cache_floats(seq_len)
