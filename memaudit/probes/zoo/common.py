"""Pieces the mixers share: rotary positions, heads, masks, state counting."""

from __future__ import annotations

import torch
from torch import nn

ROPE_BASE = 10000.0


def rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021, "RoFormer"), rotate-half form.

    x: (B, H, T, dh) with dh even; positions: (T,) float or int.
    """
    dh = x.shape[-1]
    inv = ROPE_BASE ** (-torch.arange(0, dh, 2, dtype=torch.float32, device=x.device) / dh)
    angles = positions.to(torch.float32)[:, None] * inv[None, :]  # (T, dh/2)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1)  # (T, dh)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1)
    x1, x2 = x[..., : dh // 2], x[..., dh // 2 :]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, H*d) -> (B, H, T, d); also (B, H*d) -> (B, H, d) for one step."""
    if x.dim() == 2:
        return x.view(x.shape[0], n_heads, -1)
    B, T, _ = x.shape
    return x.view(B, T, n_heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d) -> (B, T, H*d); (B, H, d) -> (B, H*d)."""
    if x.dim() == 3:
        return x.reshape(x.shape[0], -1)
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d)


def window_mask(T: int, window: int | None, device=None) -> torch.Tensor:
    """(T, T) bool, True where query i may read key j: j <= i (and j > i - window)."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    allowed = j <= i
    if window is not None:
        allowed = allowed & (j > i - window)
    return allowed


def state_numel(state) -> int:
    """Floats in a carried state (a tensor, or a tuple/dict of them), per sequence.

    Integer tensors (a position counter) are bookkeeping, not memory, and are not counted.
    """
    if isinstance(state, torch.Tensor):
        return state[0].numel() if state.is_floating_point() else 0
    items = state.values() if isinstance(state, dict) else state
    return sum(state_numel(s) for s in items)


class WindowAttention(nn.Module):
    """Causal softmax attention with RoPE, over every earlier token (``window=None``) or the
    last ``window`` ones.

    Parallel form: one masked ``scaled_dot_product_attention``. Recurrent form: the cache holds
    the last keys and values *unrotated*, and each step rotates them at positions 0..n-1 and the
    query at n-1: RoPE scores depend only on the distance, so this equals the parallel form at
    absolute positions, and the carried state is exactly the keys and values (no counter).
    """

    def __init__(self, d_model: int, n_heads: int, window: int | None):
        super().__init__()
        self.n_heads, self.window = n_heads, window
        self.d_model = d_model
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x).split(D, dim=-1))  # (B,H,T,dh)
        pos = torch.arange(T, device=x.device)
        q, k = rope(q, pos), rope(k, pos)
        mask = window_mask(T, self.window, x.device)  # (T, T)
        y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(merge_heads(y))  # (B, T, D)

    def init_state(self, batch: int) -> dict[str, torch.Tensor]:
        dh = self.d_model // self.n_heads
        w = self.out.weight
        empty = torch.zeros(batch, self.n_heads, 0, dh, dtype=w.dtype, device=w.device)
        return {"k": empty, "v": empty.clone()}

    def step(self, x_t: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        D = x_t.shape[-1]
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x_t).split(D, dim=-1))  # (B,H,dh)
        ks = torch.cat([state["k"], k[:, :, None]], dim=2)  # (B, H, n, dh)
        vs = torch.cat([state["v"], v[:, :, None]], dim=2)
        if self.window is not None:
            ks, vs = ks[:, :, -self.window :], vs[:, :, -self.window :]
        n = ks.shape[2]
        pos = torch.arange(n, device=x_t.device)
        q = rope(q[:, :, None], pos[-1:])  # (B, H, 1, dh)
        y = nn.functional.scaled_dot_product_attention(q, rope(ks, pos), vs)  # (B, H, 1, dh)
        return self.out(merge_heads(y[:, :, 0])), {"k": ks, "v": vs}

    def cache_floats(self, seq_len: int) -> int:
        n = seq_len if self.window is None else min(seq_len, self.window)
        return 2 * n * self.d_model
