"""What representation misdirection (``rmu``) needs beside its loss: the steered block, the
parameters it trains, the random direction, and the original model's activations.

As in the WMDP code (Li et al. 2024, ``rmu/unlearn.py``) and OpenUnlearning's ``RMU``, only
the MLP output projections of blocks ``L-2 .. L`` are trained (``down_proj`` in Llama,
``c_proj`` in GPT-2), and the activations are block ``L``'s output. Because no parameter
below block ``L-2`` changes and the loss reads nothing above block ``L``, the original
model's activations are the current model run with the original values of the trained
weights only: those few matrices are the one copy kept, not a second model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from memaudit.errors import InputError
from memaudit.models.anatomy import blocks, mlp_output_module


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass whose later layers are not needed."""


@dataclass
class Steering:
    """One rmu run's fixed parts; build with :meth:`build`."""

    block: torch.nn.Module
    trained: list[torch.nn.Parameter]
    original: dict[str, torch.Tensor]  # name -> the trained weights' values before unlearning
    target: torch.Tensor  # (D,) c u
    alpha: float
    layer: int

    @classmethod
    def build(
        cls, model, *, layer: int | None, coefficient: float, alpha: float, seed: int
    ) -> Steering:
        """Block ``layer`` (default: the middle one, ``(layers - 1) // 2``), the MLP output
        weights of blocks ``layer-2 .. layer`` and ``c u``, ``u`` drawn as the WMDP code draws
        it: uniform on ``[0, 1)^D`` with the seed, then normalised."""
        stack = blocks(model)
        layer = (len(stack) - 1) // 2 if layer is None else layer
        if not 0 <= layer < len(stack):
            raise InputError(f"--rmu-layer must be in 0..{len(stack) - 1}, got {layer}")
        trained = [
            mlp_output_module(stack[i], who="rmu").weight
            for i in range(max(0, layer - 2), layer + 1)
        ]
        names = {id(p): n for n, p in model.named_parameters()}
        original = {names[id(p)]: p.detach().clone() for p in trained}
        width = model.config.hidden_size
        u = torch.rand(width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        device, dtype = trained[0].device, trained[0].dtype
        target = (coefficient * u / u.norm()).to(device=device, dtype=dtype)
        return cls(stack[layer], trained, original, target, alpha, layer)

    @contextmanager
    def capture(self, *, stop: bool = False) -> Iterator[list[torch.Tensor]]:
        """The block outputs of the forward passes run inside, (B, T, D) each; with ``stop``
        the pass ends at the block (wrap it in :meth:`run_until`)."""
        seen: list[torch.Tensor] = []

        def hook(module, args, output):
            seen.append(output[0] if isinstance(output, tuple) else output)
            if stop:
                raise _Stop

        handle = self.block.register_forward_hook(hook)
        try:
            yield seen
        finally:
            handle.remove()

    @torch.no_grad()
    def original_hidden(self, model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Block ``layer``'s output under the original model: (B, T, D), no gradient; in eval
        mode, as the WMDP code's frozen model runs (no dropout)."""
        was_training = model.training
        model.eval()
        try:
            with self.capture(stop=True) as seen:
                try:
                    torch.func.functional_call(
                        model, self.original, (), {"input_ids": ids, "attention_mask": mask}
                    )
                except _Stop:
                    pass
        finally:
            model.train(was_training)
        return seen[0]

    def describe(self) -> dict:
        """What the run record says of the steering."""
        return {
            "layer": self.layer,
            "trained": sorted(self.original),
            "coefficient": float(self.target.norm()),
            "alpha": self.alpha,
        }
