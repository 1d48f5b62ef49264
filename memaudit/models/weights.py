"""Checks on weight files before any loader reads them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from memaudit.errors import ModelLoadError


def check_safetensors(files: Sequence[Path]) -> None:
    """Each file's header reads and fits the file (a truncated or garbled file is one line
    here, not a traceback from the loader); the tensors themselves are not read.

    Raises
    ------
    ModelLoadError
        Naming the first file that is not valid safetensors.
    """
    from safetensors import SafetensorError, safe_open

    for f in files:
        try:
            with safe_open(str(f), "pt") as fh:
                fh.keys()
        except (SafetensorError, OSError) as e:
            reason = (str(e).strip() or type(e).__name__).splitlines()[0]
            raise ModelLoadError(f"{f}: not a valid safetensors file ({reason})") from e
