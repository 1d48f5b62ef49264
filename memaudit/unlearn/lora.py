"""LoRA unlearning: low-rank adapters on a frozen base, trained by the shared loop, merged for
output.

Only the adapters' parameters require gradients, so the loop's optimizer (which takes the
trainable parameters only) keeps AdamW moments for them alone, and no gradient of a base weight
is ever stored: that is where the memory of a step goes down against full fine-tuning.
The adapter starts as the identity (peft initialises B to zero), so NPO's reference
log-probabilities, computed before the first step, are the base model's.

Checkpoints and the final model are merged copies (``merge_and_unload``), so every model dir
``unlearn`` writes is a plain model for ``unlearn-eval``; ``--keep-adapter`` also writes the
adapter, which loads back with ``--adapter`` (:mod:`memaudit.models.peft_adapters`).
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from memaudit.errors import InputError
from memaudit.io.outdir import publish_dir

ADAPTER_DIR = "adapter"  # under the unlearn out dir
ADAPTER_KIND = "adapter:unlearn"


def _peft():
    try:
        import peft
    except ImportError:
        raise InputError(
            "--lora-rank needs peft, which is not installed: pip install 'memaudit[peft]'"
        ) from None
    return peft


def _adaptable(model) -> dict[str, torch.nn.Module]:
    """Every linear layer (``nn.Linear``, or transformers' ``Conv1D`` in GPT-2) but the output
    head, by full module name."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear | Conv1D) and m is not head
    }


def lora_targets(model, spec: str = "auto") -> list[str]:
    """The module names (peft's ``target_modules``: last name parts) LoRA adapts.

    ``auto``: the last name part of every linear layer but the output head, in model order:
    GPT-2 ``c_attn, c_proj, c_fc``; Llama ``q_proj, k_proj, v_proj, o_proj, gate_proj,
    up_proj, down_proj``. Otherwise a comma list, each name checked against the model.
    """
    found = list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in _adaptable(model)))
    head = model.get_output_embeddings()
    head_name = next((n.rsplit(".", 1)[-1] for n, m in model.named_modules() if m is head), None)
    if spec == "auto":
        if head_name in found:  # a block layer named like the head would adapt the head too
            found.remove(head_name)
        if not found:
            raise InputError("--lora-targets auto: the model has no linear layers to adapt")
        return found
    names = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [n for n in names if n not in found]
    if unknown:
        raise InputError(
            f"--lora-targets: no linear layer named {', '.join(map(repr, unknown))} in the model "
            f"(its linear layers: {', '.join(found)})"
        )
    return names


def attach_lora(model, *, rank: int, alpha: float, targets: list[str], base_path: str) -> Any:
    """``model`` wrapped with fresh LoRA adapters (dropout 0, no bias); only they are trainable.

    ``base_path`` is written into the adapter's config (``base_model_name_or_path``), which
    ``--adapter`` checks against the base it is given.
    """
    peft = _peft()
    from transformers.pytorch_utils import Conv1D

    chosen = [
        m for n, m in _adaptable(model).items() if n.rsplit(".", 1)[-1] in targets
    ]  # peft matches by last name part
    conv1d = [isinstance(m, Conv1D) for m in chosen]
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=targets,
        lora_dropout=0.0,
        bias="none",
        # GPT-2's Conv1D stores its weight transposed (peft would warn, then set this itself)
        fan_in_fan_out=bool(conv1d) and all(conv1d),
        base_model_name_or_path=base_path,
    )
    torch.manual_seed(0)  # A's random init: the same adapter start on every run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's notes on fan_in_fan_out and tied weights
        wrapped = peft.get_peft_model(model, config)
    wrapped.peft_config["default"].base_model_name_or_path = base_path
    return wrapped


def lora_summary(wrapped, *, rank: int, alpha: float, targets: list[str]) -> dict:
    """What memaudit_unlearn.json records of the LoRA settings."""
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    return {
        "rank": rank,
        "alpha": alpha,
        "targets": targets,
        "dropout": 0.0,
        "trainable_parameters": trainable,
        "base_parameters": total - trainable,
    }


def merged_copy(wrapped) -> Any:
    """A plain model with the adapters folded in; ``wrapped`` is left as it is (training goes
    on)."""
    return copy.deepcopy(wrapped).merge_and_unload()


def save_adapter(wrapped, out: Path) -> Path:
    """The adapter (``adapter_config.json``, ``adapter_model.safetensors``) written atomically to
    ``out/adapter``."""
    dest = out / ADAPTER_DIR
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{ADAPTER_DIR}."))
    try:
        wrapped.save_pretrained(str(tmp), safe_serialization=True)
        publish_dir(tmp, dest, ADAPTER_KIND)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
