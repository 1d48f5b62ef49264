"""Model adapters. A scorer needs only the small :class:`~memaudit.models.base.CausalLM`
contract.
"""

from .base import CausalLM
from .hf import HFCausalLM, load_causal_lm

__all__ = ["CausalLM", "HFCausalLM", "load_causal_lm"]
