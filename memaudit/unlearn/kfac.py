"""The curvature edit: keep a weight's high-curvature components, drop the rest.

For each chosen MLP weight W (inputs a, outputs with loss gradients g), K-FAC approximates
the loss curvature as ``G (x) A`` with ``A = E[a a^T]`` and ``G = E[g g^T]``, collected on
retain-like data. In the eigenbases ``A = U diag(lambda) U^T`` and ``G = V diag(mu) V^T`` the
component (i, j) of ``W~ = U^T W V`` has curvature ``lambda_i mu_j``. Memorized sequences
live mostly in low-curvature directions (Goodfire 2025), so the edit keeps the components of
highest curvature until they hold ``rho`` of the total and zeroes the rest:
``W <- U (M * W~) V^T``. No gradient step ever touches the forget set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from memaudit.errors import InputError
from memaudit.models.anatomy import set_weight_io, weight_io


def mlp_layers(model, layers: str = "all") -> dict[str, torch.nn.Module]:
    """The MLP projections of a GPT-2-style model (``h.{i}.mlp.c_fc`` / ``c_proj``), optionally of
    some blocks.

    ``layers`` is ``"all"`` or a comma list of block indices (``"2,3"``).
    """
    found = {
        n: m
        for n, m in model.named_modules()
        if ".mlp." in f"{n}." and hasattr(m, "weight") and m.weight.dim() == 2
    }
    if not found:
        raise InputError(
            "no MLP weights found (the curvature edit knows GPT-2-style '.mlp.' projections)"
        )
    if layers == "all":
        return found
    try:
        wanted = {int(x) for x in layers.split(",")}
    except ValueError:
        raise InputError(
            f"layers must be 'all' or block indices like '2,3', got '{layers}'"
        ) from None
    chosen = {n: m for n, m in found.items() if any(f".{i}.mlp." in f".{n}." for i in wanted)}
    if not chosen:
        raise InputError(f"no MLP weights in blocks {sorted(wanted)}")
    return chosen


def collect_factors(
    model,
    batches: list[torch.Tensor],
    modules: dict[str, torch.nn.Module],
    *,
    progress: Callable | None = None,
) -> dict:
    """``A = E[a a^T]`` and ``G = E[g g^T]`` per module, over the positions of ``batches``
    ((B, T) ids) that predict a token.

    The last position of each sequence predicts nothing, so its gradient is zero: counting
    its activation in ``A`` (and its zero in ``G``) would bias both. It is dropped, as in
    the reference implementation: the expectations run over ``B * (T - 1)`` positions.
    """
    stats = {n: {"A": 0.0, "G": 0.0, "n": 0} for n in modules}
    handles = []
    for name, m in modules.items():

        def fwd(mod, inputs, output, name=name):
            a = (
                inputs[0].detach()[:, :-1].reshape(-1, inputs[0].shape[-1]).double()
            )  # (B*(T-1), in)
            stats[name]["A"] = stats[name]["A"] + a.T @ a
            stats[name]["n"] += a.shape[0]

        def bwd(mod, grad_input, grad_output, name=name):
            g = grad_output[0].detach()[:, :-1]  # (B, T-1, out): the last position has none
            g = g.reshape(-1, g.shape[-1]).double()  # (B*(T-1), out)
            stats[name]["G"] = stats[name]["G"] + g.T @ g

        handles += [m.register_forward_hook(fwd), m.register_full_backward_hook(bwd)]
    device = next(model.parameters()).device
    try:
        model.eval()
        for i, batch in enumerate(batches):
            batch = batch.to(device)
            out = model(input_ids=batch, labels=batch)
            (
                out.loss * (batch.shape[0] * (batch.shape[1] - 1))
            ).backward()  # summed NLL: each token's own gradient
            model.zero_grad(set_to_none=True)
            if progress:
                progress("curvature factors", i + 1, len(batches))
    finally:
        for h in handles:
            h.remove()
    return {n: {"A": s["A"] / s["n"], "G": s["G"] / s["n"]} for n, s in stats.items()}


@torch.no_grad()
def curvature_edit(modules: dict[str, torch.nn.Module], factors: dict, rho: float) -> dict:
    """Project every module's weight onto its top-curvature components holding ``rho`` of the total.

    ``rho >= 1`` keeps every component (the weights are unchanged). Returns, per module, the
    share of components kept and the relative change of the weight.
    """
    if not 0 < rho <= 1:
        raise InputError(f"rho must be in (0, 1], got {rho}")
    report = {}
    for name, module in modules.items():
        w = weight_io(module).double()  # (in, out)
        lam, u = torch.linalg.eigh(factors[name]["A"])  # (in,), (in, in)
        mu, v = torch.linalg.eigh(factors[name]["G"])  # (out,), (out, out)
        importance = lam.clamp_min(0)[:, None] * mu.clamp_min(0)[None, :]  # (in, out)
        if rho >= 1:
            keep = torch.ones_like(importance, dtype=torch.bool)
        else:
            flat = importance.flatten()
            order = torch.argsort(flat, descending=True)
            mass = torch.cumsum(flat[order], 0) / flat.sum()
            n_keep = int(torch.searchsorted(mass, torch.tensor(rho, dtype=mass.dtype)).item()) + 1
            keep = torch.zeros_like(flat, dtype=torch.bool)
            keep[order[:n_keep]] = True
            keep = keep.reshape(importance.shape)
        w_new = u @ ((u.T @ w @ v) * keep) @ v.T
        set_weight_io(module, w_new.to(module.weight.dtype))
        report[name] = {
            "kept": float(keep.float().mean()),
            "relative_change": float((w_new - w).norm() / w.norm()),
        }
    return report
