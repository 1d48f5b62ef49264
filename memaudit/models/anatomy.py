"""Where things are inside a transformers causal LM: its blocks and each block's MLP output
projection, for the methods that read or rewrite one layer (rmu, the curvature edit, model
editing). Known to work for GPT-2, Llama, GPT-NeoX and their kin.
"""

from __future__ import annotations

from typing import Any

import torch

from memaudit.errors import InputError


def blocks(model: Any) -> torch.nn.ModuleList:
    """The model's transformer blocks: the module list as long as its layer count."""
    n = getattr(model.config, "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise InputError("no list of transformer blocks found in this model")


def mlp_output_module(block: torch.nn.Module, *, who: str = "this method") -> Any:
    """A block's MLP output projection (``c_proj`` in GPT-2, ``down_proj`` in Llama): the last
    module with a 2-D weight under its ``mlp`` (registered after the input projections in GPT-2,
    Llama, GPT-NeoX and their kin). Its input is the MLP's key, its output the value it writes."""
    found = [
        m
        for n, m in block.named_modules()
        if n.split(".")[0] == "mlp" and isinstance(getattr(m, "weight", None), torch.Tensor)
        if m.weight.dim() == 2
    ]
    if not found:
        raise InputError(f"{who}: a block without an 'mlp' projection ({who} knows '.mlp.' blocks)")
    return found[-1]


def weight_io(module: Any) -> torch.Tensor:
    """The weight as (inputs, outputs): GPT-2's Conv1D stores it so, nn.Linear transposed."""
    return module.weight.T if isinstance(module, torch.nn.Linear) else module.weight


@torch.no_grad()
def set_weight_io(module: Any, w_io: torch.Tensor) -> None:
    """Write a weight given as (inputs, outputs) back in the module's own layout."""
    module.weight.copy_(w_io.T if isinstance(module, torch.nn.Linear) else w_io)
