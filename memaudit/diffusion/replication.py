"""Replication ratio (Gu et al.): the share of generated images that copy a training image.

A generated image x is memorized when ``d1 / d2 < 1/3``, d1 and d2 its distances to the
nearest and second-nearest training image. Which training images are searched is the caller's
choice (``DUPLICATES``): ``dedup`` (memaudit's default) searches each distinct image once, so a
copy of a duplicated image is memorized like any other copy; ``keep`` searches every copy, as
DiffMemorize's ``mem_ratio.py`` does, so a copy of a duplicated image has d1 = d2 and is never
memorized. Conditional models are sampled with labels drawn
uniformly from the labels their training images carry, so every class weighs the same (a
random label that no training image got is never asked for).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from memaudit.metrics import wilson_interval

from .config import DUPLICATES, check_choice
from .ddpm import sample
from .images import unique_images
from .neighbours import Neighbours, two_nearest

THRESHOLD = 1 / 3
HOW_DUPLICATES = {  # results.json's account of each DUPLICATES choice
    "dedup": "each distinct training image searched once (memaudit's default): a copy of a "
    "duplicated image is memorized like any other copy",
    "keep": "every copy searched, as DiffMemorize's mem_ratio.py: a copy of a duplicated image "
    "has d1 = d2 and is never memorized",
}


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
        out: dict[str, Any] = {
            "ratio": k / n,
            "ci_low": lo,
            "ci_high": hi,
            "memorized": k,
            "samples": n,
            "median_d1_d2": float(np.median(self.neighbours.ratio())),
        }
        if (self.labels >= 0).any():
            out["per_label"] = {
                int(c): float(self.memorized[self.labels == c].mean())
                for c in np.unique(self.labels)
            }
        return out


def search_set(train_pixels: np.ndarray, duplicates: str) -> np.ndarray:
    """The training images the neighbour search holds: each distinct one once (``dedup``) or
    every copy (``keep``, as DiffMemorize).
    """
    check_choice("duplicates", duplicates, DUPLICATES)
    return unique_images(train_pixels) if duplicates == "dedup" else train_pixels


def sample_labels(train_labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` labels drawn uniformly from those present in the training set (-1s when
    unconditional).
    """
    present = np.unique(train_labels[train_labels >= 0])
    if not len(present):
        return np.full(n, -1)
    return np.random.default_rng(seed + 17).choice(present, n)


def replication(
    unet,
    train_pixels: np.ndarray,
    *,
    samples: int,
    train_labels: np.ndarray,
    steps: int = 50,
    guidance: float = 1.0,
    seed: int = 0,
) -> Replication:
    """Generate ``samples`` images (labels as in ``sample_labels``) and find each one's two
    nearest training images.
    """
    labels = (
        sample_labels(train_labels, samples, seed) if unet.config.classes else np.full(samples, -1)
    )
    lab = torch.as_tensor(labels) if unet.config.classes else None
    images = sample(unet, samples, steps=steps, labels=lab, guidance=guidance, seed=seed)
    return Replication(images, labels, two_nearest(images, train_pixels))
