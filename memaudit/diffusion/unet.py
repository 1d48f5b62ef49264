"""A small UNet for tiny images, written to be read top to bottom.

Two downsamplings (H and W must be divisible by 4), residual blocks with GroupNorm, the
timestep (sinusoidal) and an optional class label added to every block. Class id ``classes``
is the null label used for classifier-free guidance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class UNetConfig:
    channels: int = 1  # image channels
    size: int = 8  # image height = width
    width: int = 32  # channels of the first level; the deeper levels use 2x
    classes: int = 0  # 0 = unconditional

    def to_dict(self) -> dict:
        return asdict(self)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.norm2, self.conv2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):  # x (B, cin, H, W), e (B, emb)
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(e)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)  # (B, cout, H, W)


class TinyUNet(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        w, emb = config.width, 4 * config.width
        self.time = nn.Sequential(nn.Linear(w, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label = nn.Embedding(config.classes + 1, emb) if config.classes else None
        self.inp = nn.Conv2d(config.channels, w, 3, padding=1)
        self.down1 = ResBlock(w, w, emb)  # H
        self.pool1 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.down2 = ResBlock(2 * w, 2 * w, emb)  # H/2
        self.pool2 = nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1)
        self.mid = ResBlock(2 * w, 2 * w, emb)  # H/4
        self.up2 = ResBlock(4 * w, 2 * w, emb)  # H/2, with the skip from down2
        self.up1 = ResBlock(3 * w, w, emb)  # H, with the skip from down1
        self.out = nn.Sequential(
            nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, config.channels, 3, padding=1)
        )

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predicted noise for x (B, C, H, W) at timesteps t (B,); labels (B,) with ``classes``
        = null.
        """
        e = self.time(timestep_embedding(t, self.config.width))  # (B, emb)
        if self.label is not None:
            if labels is None:
                labels = torch.full_like(t, self.config.classes)
            e = e + self.label(labels)
        h1 = self.down1(self.inp(x), e)  # (B, w, H, W)
        h2 = self.down2(self.pool1(h1), e)  # (B, 2w, H/2, W/2)
        h = self.mid(self.pool2(h2), e)  # (B, 2w, H/4, W/4)
        h = self.up2(torch.cat([F.interpolate(h, scale_factor=2.0), h2], 1), e)  # (B, 2w, H/2, W/2)
        h = self.up1(torch.cat([F.interpolate(h, scale_factor=2.0), h1], 1), e)  # (B, w, H, W)
        return self.out(h)
