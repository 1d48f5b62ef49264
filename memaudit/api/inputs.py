"""Inputs as a person has them, turned into what a command's config names.

A path stays a path. A list of strings or dicts, a pandas DataFrame or a pyarrow Table becomes
its rows, handed to the runner under the argument's name (``members``), so a bad row reads
``members[3]: missing 'text' field``. A transformers model (with ``tokenizer=``) is handed over
as ``<in-memory model>``, wrapped and fingerprinted by ``models.hf.wrap_loaded``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from memaudit.errors import InputError
from memaudit.io.config import resolve_config
from memaudit.models.sources import Sources
from memaudit.registry import Registry


class Given:
    """Collects a call's in-memory inputs by name; ``sources()`` hands them to the runner."""

    def __init__(self) -> None:
        self.texts: dict[str, Sequence[Any]] = {}
        self.models: dict[str, tuple[Any, Any]] = {}

    def texts_of(self, name: str, value: Any) -> str | None:
        """What the config holds for the texts argument ``name``: a path, or ``name`` itself
        when the texts are in memory.
        """
        if value is None:
            return None
        if isinstance(value, str | os.PathLike):
            return os.fspath(value)
        rows = table_rows(value)
        if rows is None:
            if not isinstance(value, list | tuple):
                raise InputError(
                    f"expected a path, a list of strings or dicts, a pandas DataFrame or a "
                    f"pyarrow Table; got {type(value).__name__}",
                    path=name,
                )
            rows = list(value)
        self.texts[name] = rows
        return name

    def model_of(self, name: str, value: Any, tokenizer: Any) -> str | None:
        """What the config holds for the model argument ``name``: its dir, or
        ``<in-memory name>`` for a transformers model given with its tokenizer.
        """
        if value is None:
            if tokenizer is not None:
                raise InputError(f"a tokenizer was given for {name}, but no model")
            return None
        if isinstance(value, str | os.PathLike):
            if tokenizer is not None:
                raise InputError(
                    f"{name}: a model dir brings its own tokenizer; give a tokenizer only with "
                    "an in-memory model"
                )
            return os.fspath(value)
        if tokenizer is None:
            raise InputError(
                f"{name}: an in-memory model needs its tokenizer (the {name}'s tokenizer= argument)"
            )
        key = f"<in-memory {name}>"
        self.models[key] = (value, tokenizer)
        return key

    def sources(self) -> Sources:
        return Sources(texts=dict(self.texts), models=dict(self.models))


def table_rows(value: Any) -> list[dict[str, Any]] | None:
    """The rows of a pyarrow Table or a pandas DataFrame as dicts (None for anything else);
    neither library is imported here.
    """
    if callable(getattr(value, "to_pylist", None)) and hasattr(value, "column_names"):
        return list(value.to_pylist())  # pyarrow.Table
    if callable(getattr(value, "to_dict", None)) and hasattr(value, "columns"):
        return list(value.to_dict("records"))  # pandas.DataFrame
    return None


def build_config(cls: type, command: str, values: dict[str, Any], settings: dict[str, Any]):
    """``cls`` resolved as the command line resolves its flags (``resolve_config``: each value
    checked against the field's type, then the class's own checks), from the call's named
    arguments ``values`` and its other settings ``settings`` (field names of ``cls``).

    Raises
    ------
    UnknownNameError
        A setting ``cls`` does not have (with a "did you mean").
    InputError
        A value of the wrong type or out of range, as the command line says it.
    """
    known: Registry[Any] = Registry(f"{command} setting")
    for f in fields(cls):
        if f.init:
            known.add(f.name, f)
    for name in settings:
        known.get(name)  # an unknown one raises, with the closest names
    return resolve_config(cls, **{**settings, **values})
