"""Run dirs of ``memaudit diffusion memorization | emm | detect``: results.json, scores.parquet,
report.html.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.atomic import write_text_atomic
from memaudit.metrics import zero_fp_notes

from .config import DetectConfig, MemorizationConfig
from .images import load_images, unique_images
from .model import load_diffusion_model, read_train_set
from .replication import HOW_DUPLICATES, search_set

MEMORIZED_CLASS = (
    0.5  # a class counts as memorized when at least half of its samples copy a training image
)


def run_memorization(config: MemorizationConfig, *, progress=None):
    from .measure import load_replication, measure_checkpoints

    t0 = time.perf_counter()
    model = load_diffusion_model(config.model)
    if config.guidance != 1.0 and not model.classes:
        raise InputError(
            f"--guidance {config.guidance} needs a conditional model; {config.model} is "
            "unconditional"
        )
    images = load_images(model.train_set.source if config.train is None else config.train)
    given = images.pixels[model.train_set.indices] if config.train is None else images.pixels
    train_pixels = search_set(given, config.duplicates)
    if train_pixels.shape[1:] != (
        model.unet.config.channels,
        model.unet.config.size,
        model.unet.config.size,
    ):
        raise InputError(
            f"--train images are {train_pixels.shape[1:]} but the model makes "
            f"{(model.unet.config.channels, model.unet.config.size, model.unet.config.size)}"
        )
    run = rs.RunDir.begin(config.out, "diffusion memorization", config)
    out = run.path
    m = measure_checkpoints(
        model,
        images,
        samples=config.samples,
        sampling_steps=config.sampling_steps,
        guidance=config.guidance,
        seed=config.seed,
        train_pixels=train_pixels,
        duplicates=config.duplicates,
        progress=progress,
    )
    rep = load_replication(m["samples_file"])
    ratio = rep.neighbours.ratio()
    run.write_scores(
        {
            "id": list(range(len(ratio))),
            "label": rep.labels.tolist(),
            "nearest": rep.neighbours.index1.tolist(),
            "d1": rep.neighbours.d1.tolist(),
            "d2": rep.neighbours.d2.tolist(),
            "ratio": ratio.tolist(),
            "memorized": (ratio < 1 / 3).tolist(),
        }
    )
    results = {
        **run.header({"target": model}),
        **m,
        "threshold": "d1/d2 < 1/3",
        "duplicates": duplicates_record(config.duplicates, given),
        "train_images": len(train_pixels),
        "timings_s": {"total": time.perf_counter() - t0},
    }
    if model.classes:
        per_label = m["per_checkpoint"][str(m["max_step"])]["per_label"]
        results["prompt_files"] = write_class_labels(out, per_label)
    render = None
    if config.report:
        from memaudit.report.diffusion import write_memorization_report

        render = partial(write_memorization_report, rep=rep, train_pixels=train_pixels)
    run.finish(results, render)
    return out, results


def duplicates_record(duplicates: str, train_pixels: np.ndarray | None = None) -> dict:
    """How duplicate training images were treated (and how many there were), for results.json."""
    out: dict = {"mode": duplicates, "how": HOW_DUPLICATES[duplicates]}
    if train_pixels is not None:
        out["training_images"] = len(train_pixels)
        out["distinct"] = len(unique_images(train_pixels))
    return out


def write_class_labels(out: Path, per_label: dict) -> dict:
    """prompts.txt (class ids) and labels.txt (1 = memorized), ready for ``memaudit diffusion
    detect``.
    """
    classes = sorted(int(c) for c in per_label)
    write_text_atomic(out / "prompts.txt", "".join(f"{c}\n" for c in classes))
    write_text_atomic(
        out / "labels.txt", "".join(f"{int(per_label[c] >= MEMORIZED_CLASS)}\n" for c in classes)
    )
    return {
        "prompts": str(out / "prompts.txt"),
        "labels": str(out / "labels.txt"),
        "memorized_if_class_ratio_at_least": MEMORIZED_CLASS,
    }


def run_emm(config, *, progress=None):
    from .emm import curves, run_jobs

    t0 = time.perf_counter()
    images = load_images(config.images)  # a bad source fails here, before any worker starts
    if max(config.sizes) > len(images):
        raise InputError(
            f"--sizes asks for {max(config.sizes)} training images but {images.source} has "
            f"{len(images)}"
        )
    run = rs.RunDir.begin(config.out, "diffusion emm", config)
    jobs = run_jobs(config, run.path, progress=progress)
    run.write_scores(
        {
            "conditioning": [j["conditioning"] for j in jobs],
            "n": [j["n"] for j in jobs],
            "max_ratio": [j["max_ratio"] for j in jobs],
            "max_step": [j["max_step"] for j in jobs],
            "final_ratio": [j["final_ratio"] for j in jobs],
            "train_seconds": [j["seconds"]["train"] for j in jobs],
        }
    )
    results = {
        **run.header(),
        "target": 0.9,
        "duplicates": duplicates_record(config.duplicates),
        "curves": curves(jobs),
        "jobs": jobs,
        "timings_s": {"total": time.perf_counter() - t0},
    }
    render = None
    if config.report:
        from memaudit.report.diffusion import write_emm_report

        render = partial(write_emm_report, grids=smallest_runs(results, images))
    run.finish(results, render)
    return run.path, results


def smallest_runs(results: dict, images) -> dict[str, tuple]:
    """Per conditioning, the smallest training set's (samples file, its unique training images,
    title): the clearest copies.
    """
    from .measure import load_replication

    out = {}
    for c, curve in results["curves"].items():
        job = next(
            j for j in results["jobs"] if j["conditioning"] == c and j["n"] == min(curve["sizes"])
        )
        train_idx = read_train_set(job["model"]).indices
        out[c] = (
            load_replication(job["samples_file"]),
            search_set(images.pixels[train_idx], results["config"]["duplicates"]),
            f"{c}, |D| = {job['n']}",
        )
    return out


def read_lines(path: str, field: str, what: str) -> list[tuple[int, str]]:
    """(line number, value): plain lines, or the ``field`` of each JSONL object; blank lines are
    skipped.
    """
    from memaudit.io.texts import jsonl_objects

    p = Path(path)
    if p.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for lineno, obj in jsonl_objects(p, what=what):
            if field not in obj:
                raise InputError(f"no '{field}' field", path=str(p), line=lineno)
            rows.append((lineno, str(obj[field])))
        return rows
    if not p.is_file():
        raise InputError(f"{what} not found", path=str(p))
    return [
        (i, line.strip())
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if line.strip()
    ]


def read_labels(path: str, n: int) -> np.ndarray:
    rows = read_lines(path, "label", "labels file")
    for lineno, v in rows:
        if v not in ("0", "1", "True", "False", "true", "false"):
            raise InputError(f"label '{v}' is not 0 or 1", path=path, line=lineno)
    values = [v for _, v in rows]
    if len(values) != n:
        raise InputError(
            f"{len(values)} labels for {n} prompts; give one label per prompt", path=path
        )
    y = np.array([v in ("1", "True", "true") for v in values], dtype=int)
    if y.sum() < 2 or (1 - y).sum() < 2:
        raise InputError(
            f"need at least 2 memorized and 2 non-memorized prompts; got {y.sum()} and "
            f"{(1 - y).sum()}",
            path=path,
        )
    return y


def load_adapter(model_dir: str, device: str):
    from .detect import TinyAdapter

    if (Path(model_dir) / "model_index.json").is_file():
        from .sd_adapter import DiffusersAdapter

        adapter = DiffusersAdapter(model_dir, device=device)
        return adapter, adapter.describe()
    model = load_diffusion_model(model_dir)
    return TinyAdapter(model.unet), model.describe()


def run_detect(config: DetectConfig, *, progress=None):
    from .detect import FPR_BOUNDS, DetectSettings, evaluate, features, low_timestep

    t0 = time.perf_counter()
    prompts = [p for _, p in read_lines(config.prompts, "prompt", "prompts file")]
    if not prompts:
        raise InputError("no prompts", path=config.prompts)
    labels = read_labels(config.labels, len(prompts))
    adapter, described = load_adapter(config.model, config.device)
    run = rs.RunDir.begin(config.out, "diffusion detect", config)
    settings = DetectSettings(
        noises=config.noises,
        low_t=config.low_t,
        guidance=config.guidance,
        wen_steps=config.wen_steps,
        alignment=config.alignment,
        seed=config.seed,
    )
    feats = features(adapter, prompts, settings, progress=progress)
    ev = evaluate(
        feats, labels, weights=config.weights, seed=config.seed, n_bootstrap=config.n_bootstrap
    )
    columns = {
        "id": list(range(len(prompts))),
        "label": labels.tolist(),
        "prompt": prompts,
        **{k: v.tolist() for k, v in feats.items()},
        "combined": ev.scores["combined"].tolist(),
    }
    if ev.halves is not None:  # the combined score ranks only within a half
        columns["half"] = (ev.halves + 1).tolist()
    run.write_scores(columns)
    header = run.header()
    header["models"] = {"target": described}
    negatives = int((labels == 0).sum())
    header["notes"] += zero_fp_notes(negatives, FPR_BOUNDS, what="non-memorized prompts")
    if ev.halves is not None:  # the combined score is measured within each half
        half_negatives = min(int(((labels == 0) & (ev.halves == k)).sum()) for k in (0, 1))
        header["notes"] += zero_fp_notes(
            half_negatives, FPR_BOUNDS, what="non-memorized prompts in a half (combined score)"
        )
    results = {
        **header,
        "data": {"prompts": len(prompts), "memorized": int(labels.sum())},
        "definitions": {
            "noise_norm": f"||eps(x_T, c) - eps(x_T, null)|| at t = {adapter.T - 1}",
            ev.combined["alignment_feature"]: alignment_definition(
                config.alignment, low_timestep(config.low_t, adapter.T), adapter.T
            ),
            "combined": ev.combined,
        },
        "metrics": ev.metrics,
        "weights": ev.weights,
        "forward_passes_per_noise": {"two_pass": 2, "wen": settings.wen_steps},
        "timings_s": {"total": time.perf_counter() - t0},
    }
    render = None
    if config.report:
        from memaudit.report.diffusion import write_detect_report

        render = partial(write_detect_report, scores=ev.scores, labels=labels, halves=ev.halves)
    run.finish(results, render)
    return run.path, results


def alignment_definition(alignment: str, t_low: int, T: int) -> str:
    """What results.json says of the alignment feature that was computed."""
    where = (
        "the same pure noise x_T (the authors' A)"
        if alignment == "pure-noise"
        else "x0 predicted from x_T, noised again with x_T (memaudit's earlier variant)"
    )
    return (
        f"mean over pixels of cos(eps_null, eps_c - eps_null) over channels, at t = {t_low} of "
        f"{T}, on {where}"
    )
