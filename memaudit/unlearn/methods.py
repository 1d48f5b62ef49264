"""Unlearning objectives: each is a loss over one step's forget and retain batches.

A method is a small pure function of :class:`StepInputs`; the one training loop in
``loop.py`` computes those inputs and minimises whatever the method returns. Adding a method
touches this module and its test, never the loop. Definitions: docs/unlearning.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from memaudit.registry import Registry


@dataclass(frozen=True)
class Activations:
    """Hidden states at one block's output, for representation methods (rmu). The loop fills it
    only for a method with ``needs_activations``.
    """

    forget: torch.Tensor  # (B, T, D) the model's, on the forget batch
    forget_mask: torch.Tensor  # (B, T) 1 for a real token, 0 for padding
    retain: torch.Tensor  # (B, T', D) the model's, on the retain batch
    retain_original: torch.Tensor  # (B, T', D) the original model's (no gradient)
    target: torch.Tensor  # (D,) where forget activations are pushed: c u
    alpha: float  # weight of the retain term


@dataclass(frozen=True)
class StepInputs:
    """What a method's loss may use. Log-probabilities are summed over each forget sequence's
    tokens; the optional fields are filled by the loop only for the methods that need them.
    """

    forget_logp: torch.Tensor  # (B,) log p_theta(y) of each forget sequence
    forget_tokens: torch.Tensor  # (B,) tokens scored in each sequence (all but the first)
    reference_logp: torch.Tensor | None  # (B,) log p_ref(y) under the model before unlearning
    retain_nll: torch.Tensor | None  # () mean token NLL of the retain batch
    beta: float
    gamma: float
    retain_weight: float
    forget_length: torch.Tensor | None = None  # (B,) tokens of each sequence, the first included
    # (B, T-1) log p_theta of each token given the ones before, and 1 where it is scored;
    # forget_logp == (forget_token_logp * forget_token_mask).sum(1)
    forget_token_logp: torch.Tensor | None = None
    forget_token_mask: torch.Tensor | None = None
    # (B,) log p of each forget sequence's alternative (its prompt + a placeholder answer) under
    # the model and under the reference (idk_dpo)
    alternative_logp: torch.Tensor | None = None
    alternative_reference_logp: torch.Tensor | None = None
    activations: Activations | None = None

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

    def tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities and their mask, (B, T-1) each."""
        if self.forget_token_logp is None or self.forget_token_mask is None:
            raise ValueError("this method needs per-token log-probabilities")
        return self.forget_token_logp, self.forget_token_mask

    def alternative(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Log p of the alternatives under the model and the reference, (B,) each."""
        if self.alternative_logp is None or self.alternative_reference_logp is None:
            raise ValueError("this method needs alternative sequences (needs_alternatives)")
        return self.alternative_logp, self.alternative_reference_logp

    def hidden(self) -> Activations:
        """The steered block's activations; the loop computes them for ``needs_activations``."""
        if self.activations is None:
            raise ValueError("this method needs activations (needs_activations)")
        return self.activations


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    loss: Callable[[StepInputs], torch.Tensor]
    needs_retain: bool = False  # refuses to run without retain data
    uses_retain: bool = False  # adds the retain NLL when retain data is given
    needs_reference: bool = False
    default_beta: float = 0.1
    needs_alternatives: bool = False  # a placeholder answer per forget sequence (idk.py)
    needs_activations: bool = False  # hidden states of a steered block (rmu.py)


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


def wga(x: StepInputs) -> torch.Tensor:
    """Weighted gradient ascent (Wang et al. 2025, as OpenUnlearning's ``WGA``): gradient ascent
    with each token's NLL weighted by its probability to the power beta, the weight detached:
    ``mean_t [sg(p_t^beta) log p_t] (+ w NLL(R))``, the mean over every scored forget token.

    Tokens the model is already unsure of get almost no push, so the ascent spends itself on
    the confident (memorized) tokens and slows down as they are forgotten; beta = 1.0.
    """
    logp, mask = x.tokens()  # (B, T-1) each
    weight = torch.exp(logp.detach() * x.beta)  # p^beta, no gradient through the weight
    return _with_retain((weight * logp * mask).sum() / mask.sum(), x)


def idk_dpo(x: StepInputs) -> torch.Tensor:
    """DPO towards a placeholder answer (TOFU's IdkDPO, as OpenUnlearning computes it):
    ``-(2/beta) mean log sigmoid(beta ((log p(a) - log p_ref(a)) - (log p(y) - log p_ref(y))))
    (+ w NLL(R))``, with ``y`` the forget sequence (rejected) and ``a`` its prompt followed by
    a placeholder answer (chosen), the reference being the model before unlearning.

    Both sequences share the prompt's tokens, whose log-probabilities are equal in ``a`` and
    ``y``, so they cancel in the margin: scoring whole sequences equals scoring answers only.
    """
    alt, alt_ref = x.alternative()
    z = x.beta * ((alt - alt_ref) - (x.forget_logp - x.reference()))
    return _with_retain((2.0 / x.beta) * F.softplus(-z).mean(), x)


def _masked_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over the hidden size, then over each row's real tokens, then
    over rows (OpenUnlearning's RMU averaging; padding is left out)."""
    per_token = ((h - target) ** 2).mean(-1)  # (B, T)
    return ((per_token * mask).sum(1) / mask.sum(1)).mean()


def rmu(x: StepInputs) -> torch.Tensor:
    """Representation misdirection (Li et al. 2024, WMDP): at one block's output,
    ``mse(h_theta(F), c u) + alpha mse(h_theta(R), h_orig(R))``, each squared error averaged
    over the hidden size and the real tokens.

    ``u`` is a fixed random unit vector, ``c`` the steering coefficient; forget activations
    are pushed to a meaningless direction of large norm, retain activations kept where the
    original had them. The loss is not a function of the forget log-probabilities: the later
    layers turn scrambled activations into scrambled predictions.
    """
    a = x.hidden()
    forget = _masked_mse(a.forget, a.target, a.forget_mask.to(a.forget.dtype))
    retain_mask = torch.ones(a.retain.shape[:2], dtype=a.retain.dtype, device=a.retain.device)
    return forget + a.alpha * _masked_mse(a.retain, a.retain_original, retain_mask)


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

METHODS.add(
    "wga",
    Method(
        "wga",
        "gradient ascent weighted per token by p^beta (+ retain NLL)",
        wga,
        uses_retain=True,
        default_beta=1.0,
    ),
)
METHODS.add(
    "idk_dpo",
    Method(
        "idk_dpo",
        "DPO preferring a placeholder answer after each forget prompt (+ retain NLL)",
        idk_dpo,
        uses_retain=True,
        needs_reference=True,
        needs_alternatives=True,
    ),
)
METHODS.add(
    "rmu",
    Method(
        "rmu",
        "steer a middle block's forget activations to a random direction, keep retain ones",
        rmu,
        needs_retain=True,
        needs_activations=True,
    ),
)

EDIT_METHODS = ("kfac",)  # weight edits without gradient steps on the forget set (kfac.py)
