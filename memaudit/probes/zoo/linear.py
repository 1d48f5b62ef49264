"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs").

With a positive feature map phi on keys and queries (here elu(x) + 1, the paper's),
causal attention becomes a recurrence over a fixed-size state per head::

    S_t = S_{t-1} + phi(k_t) v_t^T          (f x d_v)
    z_t = z_{t-1} + phi(k_t)                (f)
    y_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps)

``forward`` is the parallel (quadratic, masked) form, ``step`` the recurrence; both compute the
same sums. State per layer: n_heads * (f * d_v + f) floats, whatever the length. Where
flash-linear-attention is installed and a GPU is present its chunked kernels could compute the
same thing; this CPU path is the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import merge_heads, split_heads
from .specs import ZooConfig

EPS = 1e-6


def elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.elu(x) + 1.0


class LinearCore(nn.Module):
    """The projections and the normalised linear-attention read, for any feature map.

    ``f`` is the projected query/key dim per head; ``feature`` maps (..., f) -> (..., F).
    """

    def __init__(self, d_model: int, n_heads: int, f: int, feature, n_features: int):
        super().__init__()
        self.n_heads, self.f, self.d_model = n_heads, f, d_model
        self.feature, self.n_features = feature, n_features
        self.qk = nn.Linear(d_model, 2 * n_heads * f, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    @property
    def d_v(self) -> int:
        return self.d_model // self.n_heads

    def project(self, x: torch.Tensor):
        """(B, T, D) -> phi(q), phi(k): (B, H, T, F), v: (B, H, T, d_v); also for one step."""
        q, k = self.qk(x).chunk(2, dim=-1)
        q, k = split_heads(q, self.n_heads), split_heads(k, self.n_heads)
        return self.feature(q), self.feature(k), split_heads(self.v(x), self.n_heads)

    def parallel(self, x: torch.Tensor) -> torch.Tensor:
        """The un-projected output (B, H, T, d_v)."""
        fq, fk, v = self.project(x)
        a = (fq @ fk.transpose(-1, -2)).tril()  # (B, H, T, T), phi(q_i) . phi(k_j) for j <= i
        return (a @ v) / (a.sum(-1, keepdim=True) + EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(merge_heads(self.parallel(x)))

    def init_state(self, batch: int) -> dict[str, torch.Tensor]:
        w = self.out.weight
        S = torch.zeros(
            batch, self.n_heads, self.n_features, self.d_v, dtype=w.dtype, device=w.device
        )
        return {"S": S, "z": S.new_zeros(batch, self.n_heads, self.n_features)}

    def recur(self, x_t: torch.Tensor, state: dict):
        """One token: the un-projected read (B, H, d_v) and the new state."""
        fq, fk, v = self.project(x_t)  # (B, H, F), (B, H, F), (B, H, d_v)
        S = state["S"] + fk[..., :, None] * v[..., None, :]  # (B, H, F, d_v)
        z = state["z"] + fk
        y = (fq[..., None, :] @ S)[..., 0, :] / ((fq * z).sum(-1, keepdim=True) + EPS)
        return y, {"S": S, "z": z}

    def step(self, x_t: torch.Tensor, state: dict):
        y, state = self.recur(x_t, state)
        return self.out(merge_heads(y)), state

    def linear_state_floats(self) -> int:
        return self.n_heads * (self.n_features * self.d_v + self.n_features)


class LinearAttention(LinearCore):
    """``linear_attention``: elu+1 features of dimension f = ``cfg.state`` (default head_dim)."""

    def __init__(self, cfg: ZooConfig):
        f = cfg.state_size
        super().__init__(cfg.d_model, cfg.n_heads, f, elu_plus_one, f)

    def state_floats(self, seq_len: int) -> int:
        return self.linear_state_floats()
