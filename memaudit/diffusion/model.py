"""Load a diffusion model dir written by ``memaudit diffusion train`` (safetensors only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memaudit.errors import InputError

from .train import RECORD, TrainSet, checkpoints
from .unet import TinyUNet, UNetConfig


@dataclass
class DiffusionModel:
    path: Path
    unet: TinyUNet
    train_set: TrainSet
    train_config: dict
    step: int | None  # None: the final weights
    fingerprint: str

    @property
    def classes(self) -> int:
        return self.unet.config.classes

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "fingerprint": self.fingerprint,
            "step": self.step,
            "architecture": "TinyUNet",
            "dtype": "float32",
            "device": "cpu",
            "unet": self.unet.config.to_dict(),
            "n_params": sum(p.numel() for p in self.unet.parameters()),
            "n_train": len(self.train_set.indices),
            "conditioning": self.train_config.get("conditioning"),
        }


def load_diffusion_model(model_dir, *, step: int | None = None) -> DiffusionModel:
    """The final weights, or those of checkpoint ``step``."""
    from safetensors.torch import load_model

    from memaudit.models.hf import model_fingerprint

    d = Path(model_dir)
    if not (d / "config.json").is_file() or not (d / "train_set.json").is_file():
        raise InputError(
            f"{d} is not a diffusion model dir (no config.json / train_set.json from `memaudit "
            "diffusion train`)"
        )
    if not (d / RECORD).is_file():
        raise InputError(
            f"{d}: training did not finish ({RECORD} missing); rerun the same `memaudit diffusion "
            "train` to resume it"
        )
    config = json.loads((d / "config.json").read_text())
    unet = TinyUNet(UNetConfig(**config["unet"]))
    if step is None:
        weights = d / "model.safetensors"
    else:
        found = dict(checkpoints(d))
        if step not in found:
            raise InputError(
                f"{d} has no checkpoint at step {step} (it has "
                f"{', '.join(map(str, found)) or 'none'})"
            )
        weights = found[step] / "model.safetensors"
    load_model(unet, str(weights))
    unet.eval()
    return DiffusionModel(
        d,
        unet,
        read_train_set(d),
        config["train"],
        step,
        model_fingerprint(d) if step is None else _fingerprint(weights),
    )


def read_train_set(model_dir) -> TrainSet:
    """The images a model dir was trained on, from its train_set.json."""
    ts = json.loads((Path(model_dir) / "train_set.json").read_text())
    return TrainSet(
        ts["source"],
        np.array(ts["indices"], dtype=np.int64),
        np.array(ts["labels"], dtype=np.int64),
        ts["classes"],
    )


def _fingerprint(weights: Path) -> str:
    from memaudit.models.hf import file_digest

    return file_digest(weights)[:16]
