"""The Python API: every command as a function, on in-memory models and texts, results as objects.

``import memaudit; memaudit.mia(model=..., members=[...], nonmembers=[...])``: the same config,
checks and runner as ``memaudit mia``, and the same run dir, read back as a
:class:`~memaudit.api.result.Result`. Walk-through: docs/api.md. ``cli`` is not imported here:
the API and the command line are two front ends of the same capabilities.
"""

from .commands import (
    canaries_make,
    canaries_split,
    dataset_inference,
    extract,
    index_build,
    mia,
    overlap,
    train,
    unlearn,
    unlearn_eval,
)
from .result import ModelDir, Result

__all__ = [
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
]
