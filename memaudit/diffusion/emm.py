"""Effective model memorization (EMM): the largest training-set size at which R >= 90%.

One model per (conditioning, size), trained under the same budget, each measured with the
replication ratio at every checkpoint (the max over checkpoints counts, as in Gu et al.).
Jobs run in parallel processes, one torch thread each; each job's result is kept in its
model dir, so a killed sweep resumes and only reruns what is missing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .config import EMMConfig

TARGET = 0.9


def emm_from_curve(sizes, ratios, target: float = TARGET) -> dict:
    """Largest |D| with R >= target, linearly interpolated at the last downward crossing.

    Examples
    --------
    >>> emm_from_curve([100, 200, 400], [1.0, 0.8, 0.2])["emm"]
    150.0
    >>> emm_from_curve([100, 200], [0.5, 0.2])["emm"] is None
    True
    """
    s, r = np.asarray(sizes, dtype=float), np.asarray(ratios, dtype=float)
    order = np.argsort(s)
    s, r = s[order], r[order]
    above = np.flatnonzero(r >= target)
    if len(above) == 0:
        return {
            "emm": None,
            "bound": "below",
            "note": f"R < {target:.0%} at every size, so the EMM is below {s[0]:g}",
        }
    i = above[-1]
    if i == len(s) - 1:
        return {
            "emm": float(s[i]),
            "bound": "above",
            "note": f"R >= {target:.0%} up to the largest size, so the EMM is at least {s[i]:g}",
        }
    emm = s[i] + (r[i] - target) / (r[i] - r[i + 1]) * (s[i + 1] - s[i])
    return {
        "emm": float(emm),
        "bound": "interpolated",
        "note": f"between measured sizes {s[i]:g} (R {r[i]:.2f}) "
        f"and {s[i + 1]:g} (R {r[i + 1]:.2f})",
    }


def run_job(config: EMMConfig, conditioning: str, n: int, model_dir: str) -> dict:
    """Train one model (or resume it) and measure R at every checkpoint; the result is cached in
    the model dir.
    """
    import torch

    torch.set_num_threads(1)
    from .images import load_images
    from .measure import measure_checkpoints
    from .model import load_diffusion_model
    from .train import run_diffusion_train

    t0 = time.perf_counter()
    run_diffusion_train(train_config(config, conditioning, n, model_dir))
    t_train = time.perf_counter() - t0
    images = load_images(config.images)
    result = measure_checkpoints(
        load_diffusion_model(model_dir),
        images,
        samples=config.samples,
        sampling_steps=config.sampling_steps,
        seed=config.seed,
        duplicates=config.duplicates,
    )
    return {
        "conditioning": conditioning,
        "n": n,
        "model": model_dir,
        **result,
        "seconds": {"train": t_train, "total": time.perf_counter() - t0},
    }


def train_config(config: EMMConfig, conditioning: str, n: int, model_dir: str):
    from .train import DiffusionTrainConfig

    return DiffusionTrainConfig(
        images=config.images,
        n=n,
        out=model_dir,
        conditioning=conditioning,
        classes=config.classes if conditioning == "random-labels" else None,
        steps=config.steps,
        batch_size=config.batch_size,
        width=config.width,
        checkpoints=config.checkpoints,
        seed=config.seed,
    )


def job_dir(config: EMMConfig, out: Path, conditioning: str, n: int) -> str:
    """One dir per training config: a rerun with other settings trains anew instead of clashing."""
    return str(
        out
        / "models"
        / f"{conditioning}-n{n}-{train_config(config, conditioning, n, '').identity()[:8]}"
    )


def run_jobs(config: EMMConfig, out: Path, *, progress: Callable | None = None) -> list[dict]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    jobs = config.jobs()
    workers = min(len(jobs), config.workers or os.cpu_count() or 1)
    results = []
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {
            pool.submit(run_job, config, c, n, job_dir(config, out, c, n)): (c, n) for c, n in jobs
        }
        for done, fut in enumerate(as_completed(futures), 1):
            results.append(fut.result())
            if progress:
                c, n = futures[fut]
                progress(
                    "training and measuring",
                    done,
                    len(jobs),
                    f"{c} n={n}: R {results[-1]['max_ratio']:.2f}",
                )
    return sorted(results, key=lambda r: (config.conditionings.index(r["conditioning"]), r["n"]))


def curves(results: list[dict]) -> dict:
    """Per conditioning: sizes, R (max over checkpoints) with CIs, and the EMM."""
    out = {}
    for c in dict.fromkeys(r["conditioning"] for r in results):
        rows = [r for r in results if r["conditioning"] == c]
        sizes, ratios = [r["n"] for r in rows], [r["max_ratio"] for r in rows]
        out[c] = {
            "sizes": sizes,
            "ratio": ratios,
            "ci_low": [r["max_ci"][0] for r in rows],
            "ci_high": [r["max_ci"][1] for r in rows],
            "best_step": [r["max_step"] for r in rows],
            **emm_from_curve(sizes, ratios),
        }
    return out
