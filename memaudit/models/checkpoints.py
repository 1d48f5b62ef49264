"""Training checkpoints, one format for every trainer (the LM lab and the diffusion models).

A checkpoint is a folder ``<prefix><step:07d>`` holding ``model.safetensors``,
``optimizer.safetensors`` (AdamW's per-parameter state as flat tensors: no pickle) and
``state.json`` (the step and the identity of the run that wrote it). It is written into a
temp folder and renamed into place, so a folder with that name is always complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from memaudit.errors import InputError

WIDTH = 7  # step digits in a checkpoint's name


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """An optimizer's per-parameter state as flat tensors ("<param index>.<name>"), to save as
    safetensors.
    """
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors


def restore_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Load state saved from ``optimizer_tensors`` (safetensors: no pickle) into ``optimizer``."""
    from safetensors.torch import load_file

    state: dict[int, dict] = {}
    for key, value in load_file(str(path)).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(
        {"state": state, "param_groups": optimizer.state_dict()["param_groups"]}
    )


def list_checkpoints(folder: str | Path, prefix: str) -> list[tuple[int, Path]]:
    """(step, dir) of every finished checkpoint ``<folder>/<prefix><step>``, oldest first."""
    found = []
    for d in Path(folder).glob(f"{prefix}*"):
        digits = d.name[len(prefix) :].isdigit()
        if (
            digits
            and d.is_dir()
            and (d / "model.safetensors").is_file()
            and (d / "state.json").is_file()
        ):
            found.append((int(d.name[len(prefix) :]), d))
    return sorted(found)


def checkpoint_identity(folder: str | Path, prefix: str) -> str | None:
    """The run identity stored in the newest checkpoint, or None when there is none."""
    found = list_checkpoints(folder, prefix)
    return json.loads((found[-1][1] / "state.json").read_text()).get("identity") if found else None


def save_checkpoint(
    folder: Path,
    prefix: str,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    identity: str,
    keep_older: bool,
) -> Path:
    """Write the checkpoint of ``step`` whole (temp folder, then rename); older ones go unless
    ``keep_older``.
    """
    from safetensors.torch import save_file, save_model

    folder = Path(folder)
    name = f"{prefix}{step:0{WIDTH}d}"
    tmp = folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    save_file(optimizer_tensors(optimizer), str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "identity": identity}))
    final = folder / name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    if not keep_older:
        for s, d in list_checkpoints(folder, prefix):
            if s < step:
                shutil.rmtree(d, ignore_errors=True)
    return final


def resume_from_checkpoint(
    folder: Path,
    prefix: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    identity: str,
    owner: Path,
) -> int:
    """Load the newest checkpoint into ``model`` and ``optimizer``; its step, or 0 when there is
    none.

    Checkpoints of a run with another identity are never loaded: that is an InputError
    naming ``owner``, the directory the user chose.
    """
    from safetensors.torch import load_model

    found = list_checkpoints(folder, prefix)
    if not found:
        return 0
    if checkpoint_identity(folder, prefix) != identity:
        raise InputError(
            f"{owner} holds checkpoints of a run with another config; choose another --out"
        )
    step, d = found[-1]
    load_model(model, str(d / "model.safetensors"))
    restore_optimizer(optimizer, d / "optimizer.safetensors")
    return step
