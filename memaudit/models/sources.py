"""Where a run's texts and models come from: files by default, or objects the Python API was
handed.

A runner reads its inputs through a :class:`Sources` (``sources.read_texts(config.members)``,
``sources.load_causal_lm(config.model, options)``). The command line passes none, so every
input is a file read by ``io.texts.read_texts`` or a directory loaded by
``models.hf.load_causal_lm``. The API names each in-memory input in the config it builds
(texts by their argument, ``members``; a model as ``<in-memory model>``) and hands the
objects over under those names: they are read with the same validation
(``io.texts.read_items``) and wrapped in the same adapter (``models.hf.wrap_loaded``), so the
run after that is the command's own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from memaudit.errors import ModelLoadError
from memaudit.io.texts import Fields, ReadResult, read_items, read_texts

from .hf import HFCausalLM, LoadOptions, load_causal_lm, wrap_loaded

PLAIN = Fields()


@dataclass(frozen=True)
class Sources:
    """In-memory inputs by the name the config gives them; any other name is a path.

    Parameters
    ----------
    texts
        name -> a sequence of strings or dicts (read by ``read_items`` under that name).
    models
        name -> ``(transformers model, tokenizer)``.
    """

    texts: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    models: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)

    def read_texts(
        self,
        path: str | os.PathLike,
        *,
        label: int | None = None,
        skip_invalid: bool = False,
        fields: Fields = PLAIN,
    ) -> ReadResult:
        """The texts named ``path``: given ones, else the file's (``io.texts.read_texts``)."""
        name = os.fspath(path)
        items = self.texts.get(name)
        if items is None:
            return read_texts(name, label=label, skip_invalid=skip_invalid, fields=fields)
        return read_items(name, items, label=label, skip_invalid=skip_invalid, fields=fields)

    def load_causal_lm(
        self,
        path: str | os.PathLike,
        options: LoadOptions | None = None,
        *,
        adapter: str | os.PathLike | None = None,
    ) -> HFCausalLM:
        """The model named ``path``: a given one wrapped, else the directory's loaded."""
        given = self.models.get(str(path))
        if given is None:
            return load_causal_lm(path, options, adapter=adapter)
        if adapter is not None:
            raise ModelLoadError(
                f"{path}: an adapter is merged into a model dir on load; merge it into the "
                "in-memory model first (peft's merge_and_unload)"
            )
        model, tokenizer = given
        return wrap_loaded(model, tokenizer, options, name=str(path))


FILES = Sources()
"""Every input from a file or directory: what the command line reads through."""
