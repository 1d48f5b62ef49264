"""Memory caching (Behrouz et al. 2026, "Memory Caching: RNNs with Growing Memory",
arXiv 2602.24281), here on a linear-attention memory with the gated residual memory (GRM)
aggregation.

The sequence is cut into segments of L tokens (L = ``cfg.state``, default 32). Inside a segment
an online linear-attention memory (elu+1 features, f = head_dim) accumulates
S = sum phi(k_s) v_s^T, z = sum phi(k_s), starting empty at the segment's first token; at the
segment's end (S, z) is cached together with the segment's mean key c_i. Token t of segment j
reads the online memory and every cached one::

    r_cur  = phi(q_t)^T S / (phi(q_t)^T z + eps)                 (this segment so far)
    r_i    = phi(q_t)^T S_i / (phi(q_t)^T z_i + eps)             (segment i < j, cached)
    gamma  = softmax_i(u_t . c_i / sqrt(f))                      (u_t = W_u x_t: which segments)
    y_t    = W_o (r_cur + sum_i gamma_i r_i)

so the memory grows with the sequence: after T tokens it holds floor(T / L) cached segments
besides the online one, each n_heads * (f * d_v + 2 f) floats::

    state_floats(T) = (floor(T / L) + 1) * n_heads * (f * d_v + 2 f)

(the position inside the segment is an integer counter, not counted). ``forward`` computes the
same sums in parallel (block-diagonal causal linear attention for the online read, per-segment
sums for the caches); ``step`` is the recurrence. Where flash-linear-attention is installed and a
GPU is present its linear-attention kernels could compute the online read; this CPU path is the
reference.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import merge_heads, split_heads
from .linear import EPS, elu_plus_one
from .specs import ZooConfig

MASKED = -1e9  # a gate score for "not yet cached" that stays finite (no NaN in the backward)


class MemoryCaching(nn.Module):
    def __init__(self, cfg: ZooConfig):
        super().__init__()
        self.n_heads, self.f, self.dv = cfg.n_heads, cfg.head_dim, cfg.head_dim
        self.segment = cfg.state_size
        self.qku = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.v = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def project(self, x: torch.Tensor):
        """q, k, u: (B, H, [T,] f); v: (B, H, [T,] d_v). k is pre-feature (the gate's keys)."""
        q, k, u = (split_heads(t, self.n_heads) for t in self.qku(x).chunk(3, dim=-1))
        return q, k, u * self.f**-0.5, split_heads(self.v(x), self.n_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, u, v = self.project(x)  # (B, H, T, .)
        B, H, T, f = q.shape
        L = self.segment
        fq, fk = elu_plus_one(q), elu_plus_one(k)
        seg = torch.arange(T, device=x.device) // L  # (T,) segment of each token
        same = (seg[:, None] == seg[None, :]).tril()  # (T, T): online memory's tokens
        a = (fq @ fk.transpose(-1, -2)) * same  # (B, H, T, T)
        out = (a @ v) / (a.sum(-1, keepdim=True) + EPS)  # (B, H, T, dv)
        n = T // L  # complete segments: the only ones any token reads from the cache
        if n:
            fk_s = fk[:, :, : n * L].reshape(B, H, n, L, f)
            S = fk_s.transpose(-1, -2) @ v[:, :, : n * L].reshape(B, H, n, L, -1)  # (B,H,n,f,dv)
            z = fk_s.sum(3)  # (B, H, n, f)
            c = k[:, :, : n * L].reshape(B, H, n, L, f).mean(3)  # (B, H, n, f)
            num = torch.einsum("bhtf,bhnfd->bhtnd", fq, S)
            reads = num / (torch.einsum("bhtf,bhnf->bhtn", fq, z)[..., None] + EPS)
            cached = torch.arange(n, device=x.device)[None, :] < seg[:, None]  # (T, n)
            scores = (u @ c.transpose(-1, -2)).masked_fill(~cached, MASKED)  # (B, H, T, n)
            gamma = scores.softmax(-1) * cached  # rows with nothing cached get weight 0
            out = out + (gamma[..., None] * reads).sum(3)
        return self.out(merge_heads(out))

    def init_state(self, batch: int) -> dict[str, torch.Tensor]:
        w = self.out.weight
        H, f = self.n_heads, self.f
        S = torch.zeros(batch, H, f, self.dv, dtype=w.dtype, device=w.device)
        return {
            "S": S,
            "z": S.new_zeros(batch, H, f),
            "ksum": S.new_zeros(batch, H, f),
            "cached_S": S.new_zeros(batch, H, 0, f, self.dv),
            "cached_z": S.new_zeros(batch, H, 0, f),
            "cached_c": S.new_zeros(batch, H, 0, f),
            "pos": torch.zeros(batch, dtype=torch.long, device=w.device),
        }

    def step(self, x_t: torch.Tensor, state: dict):
        q, k, u, v = self.project(x_t)  # (B, H, .)
        fq, fk = elu_plus_one(q), elu_plus_one(k)
        S = state["S"] + fk[..., :, None] * v[..., None, :]  # (B, H, f, dv)
        z, ksum = state["z"] + fk, state["ksum"] + k
        y = (fq[..., None, :] @ S)[..., 0, :] / ((fq * z).sum(-1, keepdim=True) + EPS)
        cS, cz, cc = state["cached_S"], state["cached_z"], state["cached_c"]
        if cS.shape[2]:
            num = torch.einsum("bhf,bhnfd->bhnd", fq, cS)
            reads = num / (torch.einsum("bhf,bhnf->bhn", fq, cz)[..., None] + EPS)
            gamma = torch.einsum("bhf,bhnf->bhn", u, cc).softmax(-1)  # (B, H, n)
            y = y + (gamma[..., None] * reads).sum(2)
        pos = state["pos"] + 1
        if int(pos[0]) % self.segment == 0:  # the segment ends here: cache it, start afresh
            cS = torch.cat([cS, S[:, :, None]], dim=2)
            cz = torch.cat([cz, z[:, :, None]], dim=2)
            cc = torch.cat([cc, (ksum / self.segment)[:, :, None]], dim=2)
            S, z, ksum = torch.zeros_like(S), torch.zeros_like(z), torch.zeros_like(ksum)
        new = {"S": S, "z": z, "ksum": ksum, "cached_S": cS, "cached_z": cz, "cached_c": cc}
        return self.out(merge_heads(y)), {**new, "pos": pos}

    def state_floats(self, seq_len: int) -> int:
        per_memory = self.n_heads * (self.f * self.dv + 2 * self.f)
        return (seq_len // self.segment + 1) * per_memory
