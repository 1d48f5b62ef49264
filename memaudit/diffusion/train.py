"""``memaudit diffusion train``: a small DDPM trained on N images, with checkpoints kept for the
ratio.

The model dir holds ``config.json`` (the UNet and the whole training config), ``train_set.json``
(which source images, with the labels the model saw), ``model.safetensors`` (final weights),
``checkpoints/step-*/model.safetensors`` and ``memaudit_diffusion.json``, written last: its
presence means the run finished. Every step's batch, timesteps, noise and label dropout come
from a generator seeded by (seed, step), so a run killed midway resumes from its last
checkpoint and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from memaudit.errors import InputError
from memaudit.io import rundir as rs
from memaudit.io.atomic import write_text_atomic
from memaudit.io.outdir import prepare_out_dir
from memaudit.io.progress import Progress
from memaudit.models.checkpoints import (
    list_checkpoints,
    resume_from_checkpoint,
    save_checkpoint,
)

from .config import DiffusionTrainConfig
from .ddpm import T, add_noise, alphas_bar, to_model_space
from .images import ImageSet, balanced_subset, load_images
from .unet import TinyUNet, UNetConfig

RECORD = "memaudit_diffusion.json"
CHECKPOINT = "step-"  # out/checkpoints/step-0000500/: every one is kept, R is measured at each


@dataclass(frozen=True)
class TrainSet:
    """The images a model trained on: source indices, the labels it saw (-1 = none) and how many
    labels exist.
    """

    source: str
    indices: np.ndarray
    labels: np.ndarray
    classes: int

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "indices": self.indices.tolist(),
            "labels": self.labels.tolist(),
            "classes": self.classes,
        }


def make_train_set(config: DiffusionTrainConfig, images: ImageSet) -> TrainSet:
    idx = balanced_subset(images, config.n or len(images), seed=config.seed)
    if config.conditioning == "none":
        return TrainSet(images.source, idx, np.full(len(idx), -1), 0)
    if config.conditioning == "class":
        if (images.labels[idx] < 0).any():
            raise InputError(
                f"{images.source} has no class labels (use class subfolders) for --conditioning "
                "class"
            )
        return TrainSet(images.source, idx, images.labels[idx], len(images.class_names))
    classes = config.classes or 10
    labels = np.random.default_rng(config.seed + 1).integers(0, classes, len(idx))
    return TrainSet(images.source, idx, labels, classes)


def run_diffusion_train(config: DiffusionTrainConfig, *, progress: Progress | None = None) -> Path:
    """Train (resume, or return at once when this exact run already finished) and write the
    model dir.
    """
    out = Path(config.out)
    stored = _stored_identity(out)  # another kind of model dir is refused by name first
    if stored is not None and stored != config.identity():
        raise InputError(
            f"{out} holds a diffusion model trained with other settings; choose another --out"
        )
    if (out / RECORD).is_file():
        return out
    prepare_out_dir(out, kind="model:diffusion", inputs=[config.images], overwrite=config.overwrite)
    images = load_images(config.images, resize=config.resize)
    train_set = make_train_set(config, images)
    pixels = to_model_space(images.pixels[train_set.indices])  # (N, C, H, W) in [-1, 1]
    c, h, w = images.shape
    if h != w or h % 4:
        raise InputError(
            f"images are {w}x{h}; the UNet needs square images with a side divisible by 4 (use "
            "--resize)"
        )
    unet_config = UNetConfig(channels=c, size=h, width=config.width, classes=train_set.classes)
    torch.manual_seed(config.seed)
    model = TinyUNet(unet_config)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    out.mkdir(parents=True, exist_ok=True)
    start = resume_from_checkpoint(
        out / "checkpoints", CHECKPOINT, model, opt, identity=config.identity(), owner=out
    )
    if start and progress is not None:
        stage = "training the diffusion model"
        progress(stage, start, config.steps, f"resumed from the checkpoint of step {start}")
    _write_json(
        out / "config.json",
        {"unet": unet_config.to_dict(), "train": config.to_dict(), "identity": config.identity()},
    )
    _write_json(out / "train_set.json", train_set.to_dict())
    labels = torch.as_tensor(train_set.labels)
    losses, t0 = [], time.perf_counter()
    abar = alphas_bar()
    save_at = set(config.checkpoint_steps())
    model.train()
    for step in range(start, config.steps):
        loss = _train_step(model, opt, pixels, labels, config, step, abar)
        losses.append(loss)
        if step + 1 in save_at:
            save_checkpoint(
                out / "checkpoints",
                CHECKPOINT,
                step + 1,
                model,
                opt,
                identity=config.identity(),
                keep_older=True,
            )
        if progress:
            progress("training the diffusion model", step + 1, config.steps, f"loss {loss:.4f}")
    _finish(out, config, train_set, losses, time.perf_counter() - t0, start)
    return out


def _train_step(model, opt, pixels, labels, config, step: int, abar) -> float:
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    rows = torch.randint(0, len(pixels), (config.batch_size,), generator=gen)
    x0 = pixels[rows]  # (B, C, H, W)
    t = torch.randint(0, T, (len(rows),), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    lab = None
    if model.config.classes:
        lab = labels[rows].clone()
        lab[torch.rand(len(rows), generator=gen) < config.label_dropout] = (
            model.config.classes
        )  # the null label
    loss = torch.nn.functional.mse_loss(model(add_noise(x0, t, noise, abar), t, lab), noise)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def _write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(rs.jsonable(obj), indent=2) + "\n")


def _stored_identity(out: Path) -> str | None:
    """The identity of the run this dir holds (finished or not), from its config.json; None for
    a new dir.
    """
    f = out / "config.json"
    if not f.is_file():
        return None
    stored = json.loads(f.read_text())
    if "identity" not in stored or "unet" not in stored:
        raise InputError(
            f"{out} holds another kind of model (its config.json is not a diffusion model's); "
            "choose another --out"
        )
    return stored["identity"]


def checkpoints(model_dir: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every finished checkpoint, oldest first."""
    return list_checkpoints(Path(model_dir) / "checkpoints", CHECKPOINT)


def _finish(
    out: Path, config, train_set: TrainSet, losses: list[float], seconds: float, start: int
) -> None:
    from memaudit.models.hf import model_fingerprint

    last = checkpoints(out)[-1][1]
    shutil.copyfile(last / "model.safetensors", out / ".model.safetensors.tmp")
    (out / ".model.safetensors.tmp").replace(out / "model.safetensors")
    record = {
        **rs.environment(),
        "identity": config.identity(),
        "config": config.to_dict(),
        "n_train": len(train_set.indices),
        "resumed_from_step": start,
        "train_seconds": seconds,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "fingerprint": model_fingerprint(out),
    }
    _write_json(out / RECORD, record)
