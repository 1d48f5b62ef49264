"""The replication ratio of every checkpoint of a model dir, cached next to the model.

The cache key holds the model's fingerprint and the sampling settings; the best checkpoint's
samples and neighbours are kept as a plain ``.npz`` (read with ``allow_pickle=False``) so the
report can show them without sampling again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from memaudit.errors import InputError
from memaudit.io.atomic import atomic_output, write_text_atomic

from .images import ImageSet
from .model import DiffusionModel, load_diffusion_model
from .neighbours import Neighbours
from .replication import Replication, replication, search_set
from .train import checkpoints

VERSION = 3  # part of the cache key: bump when sampling or measuring changes


def measure_checkpoints(
    final: DiffusionModel,
    images: ImageSet,
    *,
    samples: int,
    sampling_steps: int = 50,
    guidance: float = 1.0,
    seed: int = 0,
    train_pixels: np.ndarray | None = None,
    duplicates: str = "dedup",
    progress=None,
) -> dict:
    """R per checkpoint of the model dir ``final`` was loaded from, the max and its step; cached
    per (model, settings, searched images). ``duplicates``: see ``replication.search_set``.
    """
    model_dir = final.path
    if train_pixels is None:
        train_pixels = images.pixels[final.train_set.indices]
    train_pixels = search_set(train_pixels, duplicates)
    key = _key(final.fingerprint, train_pixels, samples, sampling_steps, guidance, seed)
    cache = model_dir / "replication" / f"{key}.json"
    samples_file = {
        "samples_file": str(cache.with_suffix(".npz"))
    }  # not stored: a path relative to where this process runs
    if cache.is_file():
        return {**json.loads(cache.read_text()), **samples_file}
    per_step, best = {}, None
    steps = [s for s, _ in checkpoints(model_dir)]
    for i, step in enumerate(steps):
        model = load_diffusion_model(model_dir, step=step)
        rep = replication(
            model.unet,
            train_pixels,
            samples=samples,
            train_labels=final.train_set.labels,
            steps=sampling_steps,
            guidance=guidance,
            seed=seed,
        )
        per_step[step] = rep.summary()
        if best is None or per_step[step]["ratio"] > per_step[best[0]]["ratio"]:
            best = (step, rep)
        if progress:
            progress(
                "sampling checkpoints",
                i + 1,
                len(steps),
                f"step {step}: R {per_step[step]['ratio']:.2f}",
            )
    if best is None:
        raise InputError(f"{model_dir} has no checkpoints to measure")
    max_step, rep = best
    save_replication(cache.with_suffix(".npz"), rep)
    result = {
        "per_checkpoint": {str(s): v for s, v in per_step.items()},
        "max_ratio": per_step[max_step]["ratio"],
        "max_ci": [per_step[max_step]["ci_low"], per_step[max_step]["ci_high"]],
        "max_step": max_step,
        "final_ratio": per_step[steps[-1]]["ratio"],
        "fingerprint": final.fingerprint,
    }
    write_text_atomic(cache, json.dumps(result, indent=2) + "\n")
    return {**result, **samples_file}


def _key(
    fingerprint: str,
    train_pixels: np.ndarray,
    samples: int,
    sampling_steps: int,
    guidance: float,
    seed: int,
) -> str:
    h = hashlib.sha256(
        json.dumps([VERSION, fingerprint, samples, sampling_steps, guidance, seed]).encode()
    )
    h.update(np.ascontiguousarray(train_pixels).tobytes())
    return h.hexdigest()[:16]


def save_replication(path: Path, rep: Replication) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nn = rep.neighbours
    with atomic_output(path) as fh:
        np.savez(
            fh,
            samples=rep.samples,
            labels=rep.labels,
            index1=nn.index1,
            index2=nn.index2,
            d1=nn.d1,
            d2=nn.d2,
        )


def load_replication(path) -> Replication:
    with np.load(path, allow_pickle=False) as z:
        return Replication(
            z["samples"], z["labels"], Neighbours(z["index1"], z["index2"], z["d1"], z["d2"])
        )
