"""Attacks that calibrate the target's likelihood against another scored view."""

from __future__ import annotations

import numpy as np

from .base import AttackInputs, mean_logp, register


@register(
    "lowercase",
    description=(
        "NLL of the lowercased text over NLL of the text, under the target model "
        "(Carlini et al. 2021)"
    ),
    needs=("lowercase",),
    cost="+1 target pass (the lowercased text)",
)
def lowercase(inputs: AttackInputs) -> np.ndarray:
    nll_text = -mean_logp(inputs.target)
    nll_lower = -mean_logp(inputs.view("lowercase"))
    # a perfectly memorized text has NLL ~0; the floor keeps the ratio finite
    return nll_lower / np.maximum(nll_text, 1e-6)


@register(
    "reference",
    description=(
        "NLL under a reference model minus NLL under the target "
        "(Carlini et al. 2021; Meeus et al. 2024)"
    ),
    needs=("reference",),
    cost="+1 reference pass",
)
def reference(inputs: AttackInputs) -> np.ndarray:
    return mean_logp(inputs.target) - mean_logp(inputs.view("reference"))
