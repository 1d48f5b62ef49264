"""Replication ratio (Gu et al.): the share of generated images that copy a training image.

A generated image x is memorized when ``d1 / d2 < 1/3``, d1 and d2 its distances to the
nearest and second-nearest training image. Conditional models are sampled with labels drawn
uniformly from their classes, so every class weighs the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..extraction import wilson_interval
from .ddpm import sample
from .neighbours import Neighbours, two_nearest

THRESHOLD = 1 / 3


@dataclass
class Replication:
    samples: np.ndarray  # (S, C, H, W) uint8
    labels: np.ndarray  # (S,), -1 when unconditional
    neighbours: Neighbours

    @property
    def memorized(self) -> np.ndarray:
        return self.neighbours.ratio() < THRESHOLD

    def summary(self) -> dict:
        k, n = int(self.memorized.sum()), len(self.samples)
        lo, hi = wilson_interval(k, n)
        out = {"ratio": k / n, "ci_low": lo, "ci_high": hi, "memorized": k, "samples": n,
               "median_d1_d2": float(np.median(self.neighbours.ratio()))}
        if (self.labels >= 0).any():
            out["per_label"] = {int(c): float(self.memorized[self.labels == c].mean()) for c in np.unique(self.labels)}
        return out


def sample_labels(classes: int, n: int, seed: int) -> np.ndarray:
    if not classes:
        return np.full(n, -1)
    return np.random.default_rng(seed + 17).integers(0, classes, n)


def replication(unet, train_pixels: np.ndarray, *, samples: int, steps: int = 50, guidance: float = 1.0, seed: int = 0,
                labels: np.ndarray | None = None) -> Replication:
    """Generate ``samples`` images and find each one's two nearest training images."""
    if labels is None:
        labels = sample_labels(unet.config.classes, samples, seed)
    lab = torch.as_tensor(labels) if unet.config.classes else None
    images = sample(unet, samples, steps=steps, labels=lab, guidance=guidance, seed=seed)
    return Replication(images, labels, two_nearest(images, train_pixels))
