"""Model adapters. A scorer needs only the small :class:`~memaudit.models.base.CausalLM`
contract.

The names below are imported on first use, so that the light ``models.config`` (the
settings of ``memaudit convert``) loads without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import CausalLM
    from .hf import HFCausalLM, load_causal_lm

__all__ = ["CausalLM", "HFCausalLM", "load_causal_lm"]


def __getattr__(name: str) -> Any:
    if name == "CausalLM":
        from .base import CausalLM

        return CausalLM
    if name in ("HFCausalLM", "load_causal_lm"):
        from . import hf

        return getattr(hf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
