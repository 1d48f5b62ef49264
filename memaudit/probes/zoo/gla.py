"""Gated linear attention (Yang et al. 2024, "Gated Linear Attention Transformers with
Hardware-Efficient Training"): linear attention whose state decays per key dimension, at a rate
the input chooses::

    alpha_t = sigmoid(W2 W1 x_t) ^ (1 / 16)          (d_k, in (0, 1); low-rank W2 W1, rank 16)
    S_t     = diag(alpha_t) S_{t-1} + k_t v_t^T       (d_k x d_v per head)
    o_t     = q_t^T S_t / sqrt(d_k)
    y_t     = W_o (RMSNorm(o_t) * silu(W_g x_t))

No feature map and no normaliser (the paper's choice). ``forward`` is the chunked form (chunks
of 16: inside a chunk the decays are cumulative log-sums, differences b_t - b_s <= 0 only, so
nothing overflows; between chunks the state is carried); ``step`` is the recurrence. State per
layer: n_heads * d_k * d_v floats, d_k = ``cfg.state`` (default head_dim). Where
flash-linear-attention is installed and a GPU is present its GLA kernels could compute the same
thing; this CPU path is the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import merge_heads, split_heads
from .specs import ZooConfig

CHUNK = 16
GATE_RANK = 16
TEMPERATURE = 16.0  # the paper's tau: alpha = sigmoid(.)^(1/tau) stays near 1 at init


class GLA(nn.Module):
    def __init__(self, cfg: ZooConfig):
        super().__init__()
        self.n_heads, self.dk, self.dv = cfg.n_heads, cfg.state_size, cfg.head_dim
        hk = cfg.n_heads * self.dk
        self.qk = nn.Linear(cfg.d_model, 2 * hk, bias=False)
        self.v = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.gate = nn.Sequential(
            nn.Linear(cfg.d_model, GATE_RANK, bias=False), nn.Linear(GATE_RANK, hk)
        )
        self.g = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.norm = nn.RMSNorm(self.dv)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def project(self, x: torch.Tensor):
        """q, k, log alpha: (B, H, [T,] d_k); v: (B, H, [T,] d_v)."""
        q, k = (split_heads(t, self.n_heads) for t in self.qk(x).chunk(2, dim=-1))
        log_alpha = nn.functional.logsigmoid(self.gate(x)) / TEMPERATURE
        return (
            q * self.dk**-0.5,
            k,
            split_heads(self.v(x), self.n_heads),
            split_heads(log_alpha, self.n_heads),
        )

    def finish(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, H, [T,] d_v) read -> the mixer's output."""
        return self.out(merge_heads(self.norm(o)) * nn.functional.silu(self.g(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, la = self.project(x)  # (B, H, T, .)
        B, H, T, _ = q.shape
        S = q.new_zeros(B, H, self.dk, self.dv)
        outs = []
        for s in range(0, T, CHUNK):
            qc, kc, vc = q[:, :, s : s + CHUNK], k[:, :, s : s + CHUNK], v[:, :, s : s + CHUNK]
            b = la[:, :, s : s + CHUNK].cumsum(dim=2)  # (B, H, C, dk), log of alpha_1..alpha_t
            C = qc.shape[2]
            inter = (qc * b.exp()) @ S  # (B, H, C, dv): the carried state, decayed to each t
            diff = b[:, :, :, None, :] - b[:, :, None, :, :]  # (B, H, C, C, dk): b_t - b_s
            causal = torch.ones(C, C, dtype=torch.bool, device=x.device).tril()
            decay = diff.masked_fill(~causal[:, :, None], float("-inf")).exp()
            a = torch.einsum("bhti,bhsi,bhtsi->bhts", qc, kc, decay)  # (B, H, C, C)
            outs.append(inter + a @ vc)
            last = b[:, :, -1:]  # (B, H, 1, dk)
            S = last[:, :, 0, :, None].exp() * S + (kc * (last - b).exp()).transpose(-1, -2) @ vc
        return self.finish(torch.cat(outs, dim=2), x)

    def init_state(self, batch: int) -> dict[str, torch.Tensor]:
        w = self.out.weight
        return {
            "S": torch.zeros(batch, self.n_heads, self.dk, self.dv, dtype=w.dtype, device=w.device)
        }

    def step(self, x_t: torch.Tensor, state: dict):
        q, k, v, la = self.project(x_t)  # (B, H, .)
        S = la.exp()[..., None] * state["S"] + k[..., :, None] * v[..., None, :]  # (B, H, dk, dv)
        o = (q[..., None, :] @ S)[..., 0, :]  # (B, H, dv)
        return self.finish(o, x_t), {"S": S}

    def state_floats(self, seq_len: int) -> int:
        return self.n_heads * self.dk * self.dv
