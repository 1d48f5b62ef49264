"""DeltaNet: linear attention trained by the delta rule (Schlag et al. 2021, "Linear
Transformers Are Secretly Fast Weight Programmers"; parallelised by Yang et al. 2024,
"Parallelizing Linear Transformers with the Delta Rule over Sequence Length").

Keys and queries are L2-normalised (after a SiLU), beta_t = sigmoid(w_beta . x_t) per head::

    S_t = S_{t-1} + beta_t (v_t - S_{t-1}^T k_t)^T k_t ... in the d_k x d_v layout used here:
    S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T
    o_t = S_t^T q_t,    y_t = W_o RMSNorm(o_t)

Each step is one step of online gradient descent on the regression loss
||S^T k_t - v_t||^2 / 2 with step size beta_t: the "test-time regression" view (Wang et al. 2025,
"Test-time regression: a unifying framework for designing sequence models with associative
memory"), where plain linear attention only adds k_t v_t^T and never corrects what S already
predicts for k_t.

``forward`` is the chunked form (chunks of 16, the WY/UT form of Yang et al.): with S0 the state
at the chunk start, the corrections u_s = beta_s (v_s - S_{s-1}^T k_s) solve the unit
lower-triangular system (I + diag(beta) strictly_lower(K K^T)) U = diag(beta) (V - K S0), then
O = Q S0 + lower(Q K^T) U and the chunk's end state is S0 + K^T U. ``step`` is the recurrence.
State per layer: n_heads * d_k * d_v floats, d_k = ``cfg.state`` (default head_dim). Where
flash-linear-attention is installed and a GPU is present its delta-rule kernels could compute the
same thing; this CPU path is the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import merge_heads, split_heads
from .specs import ZooConfig

CHUNK = 16


class DeltaNet(nn.Module):
    def __init__(self, cfg: ZooConfig):
        super().__init__()
        self.n_heads, self.dk, self.dv = cfg.n_heads, cfg.state_size, cfg.head_dim
        self.qk = nn.Linear(cfg.d_model, 2 * cfg.n_heads * self.dk, bias=False)
        self.v = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.beta = nn.Linear(cfg.d_model, cfg.n_heads)
        self.norm = nn.RMSNorm(self.dv)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def project(self, x: torch.Tensor):
        """q, k: (B, H, [T,] d_k) unit norm; v: (B, H, [T,] d_v); beta: (B, H, [T])."""
        q, k = (split_heads(t, self.n_heads) for t in self.qk(x).chunk(2, dim=-1))
        q, k = (nn.functional.normalize(nn.functional.silu(t), dim=-1) for t in (q, k))
        beta = self.beta(x).sigmoid()  # (B, [T,] H)
        beta = beta.transpose(1, 2) if beta.dim() == 3 else beta
        return q, k, split_heads(self.v(x), self.n_heads), beta

    def finish(self, o: torch.Tensor) -> torch.Tensor:
        return self.out(merge_heads(self.norm(o)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, beta = self.project(x)  # (B, H, T, .), beta (B, H, T)
        B, H, T, _ = q.shape
        S = q.new_zeros(B, H, self.dk, self.dv)
        outs = []
        for s in range(0, T, CHUNK):
            qc, kc, vc = q[:, :, s : s + CHUNK], k[:, :, s : s + CHUNK], v[:, :, s : s + CHUNK]
            bc = beta[:, :, s : s + CHUNK, None]  # (B, H, C, 1)
            C = qc.shape[2]
            eye = torch.eye(C, dtype=x.dtype, device=x.device)
            system = eye + bc * (kc @ kc.transpose(-1, -2)).tril(-1)  # (B, H, C, C)
            rhs = bc * (vc - kc @ S)  # (B, H, C, dv)
            u = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
            outs.append(qc @ S + (qc @ kc.transpose(-1, -2)).tril() @ u)
            S = S + kc.transpose(-1, -2) @ u
        return self.finish(torch.cat(outs, dim=2))

    def init_state(self, batch: int) -> dict[str, torch.Tensor]:
        w = self.out.weight
        return {
            "S": torch.zeros(batch, self.n_heads, self.dk, self.dv, dtype=w.dtype, device=w.device)
        }

    def step(self, x_t: torch.Tensor, state: dict):
        q, k, v, beta = self.project(x_t)  # (B, H, .), beta (B, H)
        S = state["S"]  # (B, H, dk, dv)
        error = v - (k[..., None, :] @ S)[..., 0, :]  # (B, H, dv): v_t - S^T k_t
        S = S + beta[..., None, None] * k[..., :, None] * error[..., None, :]
        return self.finish((q[..., None, :] @ S)[..., 0, :]), {"S": S}

    def state_floats(self, seq_len: int) -> int:
        return self.n_heads * self.dk * self.dv
