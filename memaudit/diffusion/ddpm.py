"""DDPM noise schedule (Ho et al.: linear betas, T = 1000, noise prediction) and a DDIM sampler.

Sampling is deterministic DDIM (eta = 0) on a subsequence of the T steps, with classifier-free
guidance ``eps = eps_null + w * (eps_label - eps_null)`` when a guidance weight w != 1 is given.
"""

from __future__ import annotations

import numpy as np
import torch

T = 1000


def alphas_bar(steps: int = T) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, steps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()  # (T,)


def mix(x0: torch.Tensor, noise: torch.Tensor, a) -> torch.Tensor:
    """x0 noised to the level whose cumulative alpha is ``a`` (a scalar, or one per sample
    broadcast to x0).
    """
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def add_noise(
    x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor
) -> torch.Tensor:
    return mix(x0, noise, abar[t][:, None, None, None])


def predict_x0(x: torch.Tensor, eps: torch.Tensor, a) -> torch.Tensor:
    """The clean image implied by x at cumulative alpha ``a`` and its predicted noise, clamped
    to [-1, 1].
    """
    return ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)


def ddim_step(x: torch.Tensor, eps: torch.Tensor, a, a_next) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0) from cumulative alpha ``a`` to ``a_next``."""
    return mix(predict_x0(x, eps, a), eps, a_next)


def guide(eps_null: torch.Tensor, eps_label: torch.Tensor, guidance: float) -> torch.Tensor:
    return eps_null + guidance * (eps_label - eps_null)


def eps_pair(model, x, t: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(null-label, labelled) noise predictions, run as one batch."""
    null = torch.full_like(labels, model.config.classes)
    return model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([null, labels])).chunk(2)


def predict_eps(model, x, t, labels=None, guidance: float = 1.0) -> torch.Tensor:
    """Noise prediction; classifier-free guidance when labels are given and guidance != 1."""
    if labels is None or guidance == 1.0:
        return model(x, t, labels)
    return guide(*eps_pair(model, x, t, labels), guidance)


def ddim_timesteps(steps: int, total: int = T) -> list[int]:
    """``steps`` timesteps from ``total - 1`` down to 0, evenly spaced."""
    return np.linspace(total - 1, 0, steps).round().astype(int).tolist()


@torch.no_grad()
def sample(
    model,
    n: int,
    *,
    steps: int = 50,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
    seed: int = 0,
    batch_size: int = 512,
) -> np.ndarray:
    """``n`` images as uint8 (n, C, H, W) from seeded noise, batch by batch."""
    cfg = model.config
    abar = alphas_bar()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(
        n, cfg.channels, cfg.size, cfg.size, generator=gen
    )  # all at once: results don't depend on batch_size
    out = []
    for start in range(0, n, batch_size):
        x = noise[start : start + batch_size]
        lab = labels[start : start + batch_size] if labels is not None else None
        out.append(ddim_loop(model, x, steps=steps, labels=lab, guidance=guidance, abar=abar))
    return to_uint8(torch.cat(out))


def ddim_loop(model, x, *, steps: int, labels, guidance: float, abar) -> torch.Tensor:
    ts = ddim_timesteps(steps)
    for i, t in enumerate(ts):
        tt = torch.full((len(x),), t, dtype=torch.long)
        eps = predict_eps(model, x, tt, labels, guidance)
        a_next = abar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        x = ddim_step(x, eps, abar[t], a_next)
    return x


def to_model_space(pixels: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(pixels, dtype=torch.float32) / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
