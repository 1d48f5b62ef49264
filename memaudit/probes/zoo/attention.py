"""Softmax attention mixers: full causal attention and sliding-window attention, both with RoPE.

- ``attention``: Vaswani et al. 2017, "Attention is all you need", with rotary positions
  (Su et al. 2021). Its recurrent state is the KV cache, 2*T*d_model floats per layer at length T.
- ``sliding_window``: the same over the last w tokens (Beltagy et al. 2020, "Longformer"; the
  short-window attention of BASED); state 2*min(T, w)*d_model.

Where flash-linear-attention / FlashAttention is installed and a GPU is present these could run on
its kernels; this CPU path is the reference the tests use.
"""

from __future__ import annotations

from .common import WindowAttention
from .specs import ZooConfig


class Attention(WindowAttention):
    """Full causal softmax attention (``forward``: (B, T, D) -> (B, T, D))."""

    def __init__(self, cfg: ZooConfig):
        super().__init__(cfg.d_model, cfg.n_heads, window=None)

    def state_floats(self, seq_len: int) -> int:
        return self.cache_floats(seq_len)


class SlidingWindow(WindowAttention):
    """Causal softmax attention over the last ``cfg.state`` tokens (the window)."""

    def __init__(self, cfg: ZooConfig):
        super().__init__(cfg.d_model, cfg.n_heads, window=cfg.state_size)

    def state_floats(self, seq_len: int) -> int:
        return self.cache_floats(seq_len)
