"""Titans (Behrouz, Zhong, Mirrokni 2025, "Titans: Learning to Memorize at Test Time"): a neural
long-term memory, a 2-layer MLP per head whose weights are trained *while reading* by gradient
descent on an associative loss, beside a short sliding-window attention.

Per head, with L2-normalised keys/queries k_t, q_t (d_h), values v_t (d_h) and memory
M_W(x) = W2 silu(W1 x) (W1: h x d_h, W2: d_h x h, h = ``cfg.state``, default head_dim)::

    loss_t  = || M_{W_{t-1}}(k_t) - v_t ||^2
    m_t     = eta_t m_{t-1} - theta_t grad_W loss_t          (momentum: the "surprise")
    W_t     = (1 - alpha_t) W_{t-1} + m_t                     (weight decay = forgetting)
    r_t     = M_{W_t}(q_t)

eta_t, theta_t, alpha_t in (0, 1) are data-dependent (sigmoid of a linear map of x_t, per head).
The gradient is written out in closed form (two matrix products and silu'), so training
differentiates through every update end to end, and the initial W1, W2 are learned. Updates are
per token (the paper's mini-batch-in-chunk gradients are not used), so ``forward`` runs the same
recurrence as ``step`` over the sequence, beside the parallel window attention.

This is the **memory-as-gate** (MAG) variant: the window attention's output a_t and the
memory's read W_r r_t are mixed by a data-dependent gate, y_t = g_t * a_t + (1 - g_t) * W_r r_t,
g_t = sigmoid(W_g x_t) (the paper's persistent memory tokens and convolutions are left out).
State per layer: memory weights and their momentum, 4 * n_heads * h * d_h, plus the window's KV
cache, 2 * min(T, w) * d_model (w = ``cfg.window``, default 64).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import WindowAttention, merge_heads, split_heads
from .specs import ZooConfig

# gate biases at init: a small learning rate, strong momentum, little forgetting
THETA_BIAS, ETA_BIAS, ALPHA_BIAS = -2.0, 2.0, -4.0


def silu_grad(x: torch.Tensor) -> torch.Tensor:
    s = x.sigmoid()
    return s * (1 + x * (1 - s))


class Titans(nn.Module):
    def __init__(self, cfg: ZooConfig):
        super().__init__()
        self.n_heads, self.dh, self.hidden = cfg.n_heads, cfg.head_dim, cfg.state_size
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.gates = nn.Linear(cfg.d_model, 3 * cfg.n_heads)  # theta, eta, alpha per head
        with torch.no_grad():
            self.gates.bias.copy_(
                torch.tensor([THETA_BIAS, ETA_BIAS, ALPHA_BIAS]).repeat_interleave(cfg.n_heads)
            )
        self.w1 = nn.Parameter(torch.randn(cfg.n_heads, self.hidden, self.dh) * self.dh**-0.5)
        self.w2 = nn.Parameter(torch.randn(cfg.n_heads, self.dh, self.hidden) * self.hidden**-0.5)
        self.read = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.mix = nn.Linear(cfg.d_model, cfg.d_model)
        self.window = WindowAttention(cfg.d_model, cfg.n_heads, cfg.window_size)

    def memory_init(self, batch: int) -> dict[str, torch.Tensor]:
        w1 = self.w1.expand(batch, -1, -1, -1)  # (B, H, h, dh)
        w2 = self.w2.expand(batch, -1, -1, -1)  # (B, H, dh, h)
        return {"w1": w1, "w2": w2, "m1": torch.zeros_like(w1), "m2": torch.zeros_like(w2)}

    def memorize(self, x_t: torch.Tensor, mem: dict) -> tuple[torch.Tensor, dict]:
        """One token: update the memory on (k_t, v_t), read it at q_t -> (B, H, dh)."""
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x_t).chunk(3, dim=-1))
        q, k = nn.functional.normalize(q, dim=-1), nn.functional.normalize(k, dim=-1)
        theta, eta, alpha = self.gates(x_t).sigmoid().chunk(3, dim=-1)  # (B, H) each
        w1, w2 = mem["w1"], mem["w2"]
        pre = (w1 @ k[..., None])[..., 0]  # (B, H, h)
        act = nn.functional.silu(pre)
        err = (w2 @ act[..., None])[..., 0] - v  # (B, H, dh)
        g2 = 2 * err[..., :, None] * act[..., None, :]  # (B, H, dh, h)
        d_pre = (w2.transpose(-1, -2) @ (2 * err)[..., None])[..., 0] * silu_grad(pre)  # (B, H, h)
        g1 = d_pre[..., :, None] * k[..., None, :]  # (B, H, h, dh)
        eta, theta, keep = eta[..., None, None], theta[..., None, None], 1 - alpha[..., None, None]
        m1, m2 = eta * mem["m1"] - theta * g1, eta * mem["m2"] - theta * g2
        w1, w2 = keep * w1 + m1, keep * w2 + m2
        r = (w2 @ nn.functional.silu(w1 @ q[..., None]))[..., 0]  # (B, H, dh)
        return r, {"w1": w1, "w2": w2, "m1": m1, "m2": m2}

    def combine(self, attn: torch.Tensor, r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        gate = self.mix(x).sigmoid()
        return gate * attn + (1 - gate) * self.read(merge_heads(r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem = self.memory_init(x.shape[0])
        reads = []
        for t in range(x.shape[1]):
            r, mem = self.memorize(x[:, t], mem)
            reads.append(r)
        r_all = torch.stack(reads, dim=2)  # (B, H, T, dh)
        return self.combine(self.window(x), r_all, x)

    def init_state(self, batch: int) -> dict[str, torch.Tensor]:
        return {**self.memory_init(batch), **self.window.init_state(batch)}

    def step(self, x_t: torch.Tensor, state: dict):
        r, mem = self.memorize(x_t, {n: state[n] for n in ("w1", "w2", "m1", "m2")})
        a, win = self.window.step(x_t, {"k": state["k"], "v": state["v"]})
        return self.combine(a, r, x_t), {**mem, **win}

    def state_floats(self, seq_len: int) -> int:
        return 4 * self.n_heads * self.hidden * self.dh + self.window.cache_floats(seq_len)
