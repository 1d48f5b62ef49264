"""Unlearning objectives: each is a loss over one step's forget and retain batches.

A method is a small pure function of :class:`StepInputs`; the one training loop in
``loop.py`` computes those inputs and minimises whatever the method returns. Adding a method
touches this module and its test, never the loop. Definitions: shared/REFERENCES.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from memaudit.registry import Registry


@dataclass(frozen=True)
class StepInputs:
    """What a method's loss may use. Log-probabilities are summed over each forget sequence's
    tokens.
    """

    forget_logp: torch.Tensor  # (B,) log p_theta(y) of each forget sequence
    forget_tokens: torch.Tensor  # (B,) tokens scored in each sequence (all but the first)
    reference_logp: torch.Tensor | None  # (B,) log p_ref(y) under the model before unlearning
    retain_nll: torch.Tensor | None  # () mean token NLL of the retain batch
    beta: float
    gamma: float
    retain_weight: float
    forget_length: torch.Tensor | None = None  # (B,) tokens of each sequence, the first included

    def length(self) -> torch.Tensor:
        """``|y|`` as SimNPO's reference code counts it: every labelled token, the first one
        included (``labels != -100`` before the shift); one more than ``forget_tokens``.
        """
        return self.forget_tokens + 1 if self.forget_length is None else self.forget_length

    def reference(self) -> torch.Tensor:
        """The reference log-probabilities; the loop computes them for methods that declare them."""
        if self.reference_logp is None:
            raise ValueError("this method needs reference log-probabilities (needs_reference)")
        return self.reference_logp

    def retain(self) -> torch.Tensor:
        """The retain batch's NLL; the loop computes it for methods that declare it."""
        if self.retain_nll is None:
            raise ValueError("this method needs a retain batch (needs_retain)")
        return self.retain_nll


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    loss: Callable[[StepInputs], torch.Tensor]
    needs_retain: bool = False  # refuses to run without retain data
    uses_retain: bool = False  # adds the retain NLL when retain data is given
    needs_reference: bool = False
    default_beta: float = 0.1


METHODS: Registry[Method] = Registry("unlearning method")


def forget_nll(x: StepInputs) -> torch.Tensor:
    """Mean token NLL of the forget batch."""
    return -x.forget_logp.sum() / x.forget_tokens.sum()


def _with_retain(loss: torch.Tensor, x: StepInputs) -> torch.Tensor:
    return loss if x.retain_nll is None else loss + x.retain_weight * x.retain_nll


def gradient_ascent(x: StepInputs) -> torch.Tensor:
    """Raise the forget set's NLL: ``-NLL(F)``."""
    return -forget_nll(x)


def gradient_difference(x: StepInputs) -> torch.Tensor:
    """Raise the forget NLL while keeping the retain NLL low: ``-NLL(F) + w NLL(R)``."""
    return -forget_nll(x) + x.retain_weight * x.retain()


def npo(x: StepInputs) -> torch.Tensor:
    """Negative preference optimisation: ``(2/beta) mean log(1 + (p_theta/p_ref)^beta)`` (+ retain
    NLL).

    ``log(1 + e^z) = softplus(z)`` with ``z = beta (log p_theta - log p_ref)``; bounded below,
    so unlike gradient ascent it slows down once the forget set is unlikely.
    """
    z = x.beta * (x.forget_logp - x.reference())
    return _with_retain((2.0 / x.beta) * F.softplus(z).mean(), x)


def simnpo(x: StepInputs) -> torch.Tensor:
    """SimNPO: reference-free, length-normalised NPO with a margin gamma (+ retain NLL).

    As the authors' code (and OpenUnlearning's) computes it:
    ``-(2/beta) log sigmoid(beta (NLL(y)/|y| - gamma)) = (2/beta) softplus(beta (log p(y)/|y|
    + gamma))``, with ``|y|`` every labelled token (:meth:`StepInputs.length`). The margin is
    thus in nats per token, multiplied by beta; the paper's formula writes it outside beta:
    its gamma is ``beta * gamma`` here.
    """
    z = x.beta * (x.forget_logp / x.length() + x.gamma)
    return _with_retain((2.0 / x.beta) * F.softplus(z).mean(), x)


METHODS.add("ga", Method("ga", "gradient ascent on the forget set", gradient_ascent))
METHODS.add(
    "grad_diff",
    Method(
        "grad_diff",
        "gradient ascent on forget + descent on retain",
        gradient_difference,
        needs_retain=True,
    ),
)
METHODS.add(
    "npo",
    Method(
        "npo",
        "negative preference optimisation against the original model (+ retain NLL)",
        npo,
        uses_retain=True,
        needs_reference=True,
    ),
)
METHODS.add(
    "simnpo",
    Method(
        "simnpo",
        "reference-free length-normalised NPO with a margin (+ retain NLL)",
        simnpo,
        uses_retain=True,
        default_beta=2.5,
    ),
)

EDIT_METHODS = ("kfac",)  # weight edits without gradient steps on the forget set (kfac.py)
