"""The sequence-model zoo: token mixers (attention, linear attention, BASED, GLA, DeltaNet,
Titans, memory caching) in one shared block, with an exact count of each one's recurrent state.

``MIXERS`` and ``ZooConfig`` load without torch (the command line checks ``--arch`` with them);
``ZooLM``, ``save_zoo_model`` and ``load_zoo_model`` are imported on first use. Definitions,
state formulas and papers: docs/zoo.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .specs import MIXERS, MixerSpec, ZooConfig

if TYPE_CHECKING:
    from .model import ZooLM, load_zoo_model, save_zoo_model

__all__ = ["MIXERS", "MixerSpec", "ZooConfig", "ZooLM", "load_zoo_model", "save_zoo_model"]


def __getattr__(name: str) -> Any:
    if name in ("ZooLM", "load_zoo_model", "save_zoo_model"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
