"""The quantization attack's weights: round-to-nearest, group-wise, dequantized back to float32.

Zhang et al. 2024 ("Catastrophic Failure of LLM Unlearning via Quantization") found that
unlearning with a small learning rate and a utility constraint moves the weights by less than
a 4-bit quantization step, so the quantized unlearned model and the quantized original round
to nearly the same grid, and what was forgotten comes back. They quantized with RTN, GPTQ and
AWQ at 8 and 4 bits; this module does RTN, in pure PyTorch, and writes the dequantized values
back into a float32 copy of the model (a "fake-quant" copy): it runs and scores exactly as the
original does, and its numbers are those a real low-bit kernel computes up to float rounding.

**Grid.** Each weight matrix is cut into groups of ``group_size`` consecutive weights along its
*input* dimension (one output unit's weights over ``group_size`` inputs: the grouping of
GPTQ/AWQ's ``group_size`` and of llama.cpp's blocks). A row shorter than a group is one group,
and a row that is not a multiple of the group size ends in one shorter group. Per group the
grid is **asymmetric min-max**: ``step = (max - min) / (2^bits - 1)``,
``w_q = min + step * round((w - min) / step)``, the form of llama.cpp's ``Q4_1`` / ``Q8_1``
(a scale and an offset per block). Asymmetric because a group's weights are rarely centred on
zero: a symmetric grid (``Q4_0``, bitsandbytes' absmax) spends levels on the side a group does
not reach, up to twice the step at 4 bits; with the offset every one of the ``2^bits`` levels
lies inside the group's range, so ``round`` never needs a clamp and every weight moves by at
most half a step (tested per group). The finer grid is also the harder test for an unlearning
method: forgetting that comes back on it comes back on a coarser one too. A constant group
(``max == min``) is kept exactly.

**Which weights.** The 2-D weights of every ``nn.Linear`` and GPT-2 ``Conv1D`` module, except
the output head and any module that shares its weight with the input or output embedding
(GPT-2's tied ``lm_head`` is the token embedding). Biases, norms and embeddings stay float32.
This is what the 4-bit loaders the paper used do: transformers' bitsandbytes, GPTQ and AWQ
integrations convert the linear layers of the blocks and keep the output head and tied weights
in full precision (``transformers.quantizers.base.get_keys_to_not_convert``: tied keys, the
last module, the output embedding), and an ``nn.Embedding`` is not a linear layer. (llama.cpp
also quantizes the embeddings and the head, at 6 bits or more by default; not done here.)

**Identity.** A quantized copy gets its own fingerprint, derived from the original's and the
quantization settings (``QUANT_VERSION`` changes it when the arithmetic here changes), so the
score cache keeps its scores apart from the original's and a second run reuses them.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch

# bump when the arithmetic below changes: quantized scores cached under the old key are then not
# reused
QUANT_VERSION = 1
SCHEME = "rtn-asymmetric-minmax"


def fake_quantize(weight: torch.Tensor, *, bits: int, group_size: int) -> torch.Tensor:
    """``weight`` (out, in) rounded to its per-group ``bits``-bit grid and dequantized.

    Groups are ``group_size`` consecutive entries of a row (the input dimension); a row shorter
    than ``group_size`` is one group, and a remainder forms one last, shorter group. Returns a new
    float32 tensor of the same shape.

    Examples
    --------
    >>> w = torch.tensor([[0.0, 0.1, 0.2, 0.3, 1.0, 3.0]])
    >>> fake_quantize(w, bits=1, group_size=4).tolist()  # groups [0 .. 0.3] and [1, 3]
    [[0.0, 0.0, 0.30000001192092896, 0.30000001192092896, 1.0, 3.0]]
    """
    if weight.dim() != 2:
        raise ValueError(f"a weight matrix is 2-d, got shape {tuple(weight.shape)}")
    if bits < 1 or group_size < 1:
        raise ValueError(f"bits and group_size must be >= 1, got {bits} and {group_size}")
    w = weight.detach().float()
    rows, width = w.shape
    size = min(group_size, width)
    whole = width // size * size
    parts = [_round_groups(w[:, :whole].reshape(rows, -1, size), bits).reshape(rows, whole)]
    if whole < width:  # the row's last inputs: one shorter group
        parts.append(_round_groups(w[:, whole:].unsqueeze(1), bits).reshape(rows, width - whole))
    return torch.cat(parts, dim=1)


def _round_groups(groups: torch.Tensor, bits: int) -> torch.Tensor:
    """Round-to-nearest on each group's own min-max grid. ``groups``: (rows, n_groups, size)."""
    low = groups.amin(-1, keepdim=True)  # (rows, n_groups, 1)
    step = (groups.amax(-1, keepdim=True) - low) / (2**bits - 1)
    # a constant group has no step: every weight sits on its one level, the minimum
    safe = torch.where(step > 0, step, torch.ones_like(step))
    levels = torch.round((groups - low) / safe).clamp_(0, 2**bits - 1)
    return low + levels * safe


def quantizable_modules(model) -> dict[str, torch.nn.Module]:
    """The modules whose weights are quantized: every ``nn.Linear`` / ``Conv1D`` with a 2-d weight
    except the output head and modules tied to an embedding (see the module docstring)."""
    from transformers.pytorch_utils import Conv1D

    keep = set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, get, lambda: None)()
        if module is not None and getattr(module, "weight", None) is not None:
            keep.add(id(module.weight))
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, (torch.nn.Linear, Conv1D))
        and m is not head
        and m.weight.dim() == 2
        and id(m.weight) not in keep
    }


@torch.no_grad()
def fake_quantize_model(model, *, bits: int, group_size: int) -> tuple[Any, dict]:
    """A float32 copy of ``model`` whose quantizable weights are fake-quantized.

    Returns the copy and a summary (matrices and weights quantized, mean absolute change)
    for results.json. The model given is not changed.
    """
    out = copy.deepcopy(model).float().eval()
    modules = quantizable_modules(out)
    changed = total = 0.0
    for m in modules.values():
        # Linear stores (out, in); GPT-2's Conv1D stores (in, out): groups run along the inputs
        linear = isinstance(m, torch.nn.Linear)
        weight: torch.Tensor = m.weight  # type: ignore[assignment]  # a Parameter: 2-d, checked
        w = weight if linear else weight.T
        q = fake_quantize(w, bits=bits, group_size=group_size)
        changed += float((q - w).abs().sum())
        total += w.numel()
        weight.copy_(q if linear else q.T)
    summary = {
        "scheme": SCHEME,
        "bits": bits,
        "group_size": group_size,
        "matrices": len(modules),
        "weights": int(total),
        "mean_abs_change": changed / total if total else 0.0,
        "kept_float32": "embeddings, output head, biases, norms",
    }
    return out, summary


def quantized_fingerprint(fingerprint: str, *, bits: int, group_size: int) -> str:
    """The fingerprint of a quantized copy: the original's and the settings, hashed."""
    ident = f"{fingerprint}|{SCHEME}|bits={bits}|group={group_size}|v{QUANT_VERSION}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def quantized_lm(lm, *, bits: int, group_size: int):
    """A copy of a loaded :class:`~memaudit.models.hf.HFCausalLM` running the fake-quant weights.

    Tokenizer, BOS rule and settings are the original's; the model is a fake-quantized copy, the
    fingerprint :func:`quantized_fingerprint`. ``lm.quantization`` holds the summary.
    """
    model, summary = fake_quantize_model(lm.model, bits=bits, group_size=group_size)
    out = copy.copy(lm)
    out.model = model
    out._w32 = None  # the float32 head copy is made again, from the copy's own head
    out.fingerprint = quantized_fingerprint(lm.fingerprint, bits=bits, group_size=group_size)
    out.name = f"{lm.name} ({bits}-bit)"
    out.quantization = {**summary, "fingerprint": out.fingerprint}
    return out
