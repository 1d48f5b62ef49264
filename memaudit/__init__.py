"""memaudit: measure, prove and remove training-data memorization in generative models.

The Python API (``memaudit.mia``, ``memaudit.extract``, ``memaudit.unlearn`` ...; docs/api.md)
is imported on first use, so ``import memaudit`` and the command line start without torch.
"""

from __future__ import annotations

from typing import Any

from memaudit.errors import (
    InputError,
    MemauditError,
    MemauditWarning,
    ModelLoadError,
    UnknownNameError,
)
from memaudit.version import __version__

API = (
    "ModelDir",
    "Result",
    "canaries_make",
    "canaries_split",
    "dataset_inference",
    "extract",
    "index_build",
    "mia",
    "overlap",
    "train",
    "unlearn",
    "unlearn_eval",
)

__all__ = [
    *API,
    "InputError",
    "MemauditError",
    "MemauditWarning",
    "ModelLoadError",
    "UnknownNameError",
    "__version__",
]


# Two API functions share their names with capability packages (memaudit.mia, memaudit.unlearn).
# Importing a package binds it on its parent the first time it loads, which would hide the
# function; so both (light: docstrings only) load now and are unbound again, and later imports
# of their modules find them loaded and leave ``memaudit.mia`` to ``__getattr__``.
from memaudit import mia as _mia_package  # noqa: E402
from memaudit import unlearn as _unlearn_package  # noqa: E402

del mia, unlearn, _mia_package, _unlearn_package  # type: ignore[name-defined]  # noqa: F821


def __getattr__(name: str) -> Any:
    """The API's names, imported from ``memaudit.api`` when first asked for."""
    if name in API:
        from memaudit import api

        return getattr(api, name)
    raise AttributeError(f"module 'memaudit' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(API))
