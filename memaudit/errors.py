"""Typed errors. The library raises these; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class MemauditError(Exception):
    """Base class of every error memaudit raises on purpose."""


class InputError(MemauditError, ValueError):
    """Bad user input: a file, a record, a setting.

    Parameters
    ----------
    message : str
        What is wrong, in one line.
    path : str, optional
        The file the problem is in.
    line : int, optional
        1-based line number in ``path`` (JSONL, txt) or row number (parquet).
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        self.reason = message
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class MemauditWarning(UserWarning):
    """Base class of the warnings memaudit gives: the CLI shows them as ``warning: ...`` lines."""


class ModelLoadError(MemauditError):
    """A model directory that cannot be loaded safely (missing, not local, no safetensors...)."""


class UnknownNameError(MemauditError, KeyError):
    """A name not in a registry. The message carries a "did you mean" suggestion."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
