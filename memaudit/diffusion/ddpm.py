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


def add_noise(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    a = abar[t][:, None, None, None]
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def predict_eps(model, x, t, labels=None, guidance: float = 1.0) -> torch.Tensor:
    """Noise prediction; with labels and guidance != 1 the null and labelled passes run as one batch."""
    if labels is None or guidance == 1.0:
        return model(x, t, labels)
    null = torch.full_like(labels, model.config.classes)
    both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([null, labels]))
    eps_null, eps_label = both.chunk(2)
    return eps_null + guidance * (eps_label - eps_null)


def ddim_timesteps(steps: int, total: int = T) -> list[int]:
    """``steps`` timesteps from ``total - 1`` down to 0, evenly spaced."""
    return np.linspace(total - 1, 0, steps).round().astype(int).tolist()


@torch.no_grad()
def sample(model, n: int, *, steps: int = 50, labels: torch.Tensor | None = None, guidance: float = 1.0,
           seed: int = 0, batch_size: int = 512) -> np.ndarray:
    """``n`` images as uint8 (n, C, H, W) from seeded noise, batch by batch."""
    cfg = model.config
    abar = alphas_bar()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, cfg.channels, cfg.size, cfg.size, generator=gen)  # all at once: results don't depend on batch_size
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
        a = abar[t]
        x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        a_next = abar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return x


def to_model_space(pixels: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(pixels, dtype=torch.float32) / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
