"""Run configurations: frozen dataclasses resolved from defaults, then a config file, then CLI flags.

The resolved config is written whole into results.json, so every number can be traced to
the settings that made it.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from memaudit.errors import InputError


@dataclass(frozen=True)
class MiaConfig:
    """Settings of ``memaudit mia``; see ``memaudit mia --help`` for each one."""

    model: str
    members: str
    nonmembers: str
    reference: str | None = None
    attacks: str = "all"
    index: str | None = None
    out: str = "runs/mia"
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    max_length: int | None = None
    stride: int | None = None
    batch_tokens: int = 8192
    max_batch_size: int = 64
    shard_texts: int = 256
    cache_dir: str | None = None
    no_cache: bool = False
    skip_invalid: bool = False
    n_bootstrap: int = 1000
    seed: int = 0
    report: bool = True

    def __post_init__(self):
        if self.n_bootstrap < 0:
            raise InputError(f"n_bootstrap must be >= 0, got {self.n_bootstrap}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_config(cls, *, config_file: str | None = None, **overrides):
    """Build ``cls`` from its defaults, then ``config_file`` (JSON or TOML), then ``overrides``.

    Overrides that are None are treated as not given, so CLI flags only win when set.

    Examples
    --------
    >>> resolve_config(MiaConfig, model="m", members="a.jsonl", nonmembers="b.jsonl", seed=None).seed
    0
    """
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_read_config_file(Path(config_file), known))
    values.update({k: v for k, v in overrides.items() if v is not None})
    missing = [f.name for f in fields(cls) if f.name not in values and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise InputError(f"missing required setting(s): {', '.join(missing)}")
    return cls(**values)


def _read_config_file(path: Path, known: set[str]) -> dict[str, Any]:
    if not path.is_file():
        raise InputError("config file not found", path=str(path))
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise InputError("TOML config files need Python >= 3.11; use JSON", path=str(path)) from None
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (ValueError, json.JSONDecodeError) as e:
        raise InputError(f"cannot parse config ({e})", path=str(path)) from e
    if not isinstance(data, dict):
        raise InputError("config must be a mapping of setting names to values", path=str(path))
    unknown = set(data) - known
    if unknown:
        raise InputError(f"unknown setting(s): {', '.join(sorted(unknown))}", path=str(path))
    return data


@dataclass(frozen=True)
class ExtractConfig:
    """Settings of ``memaudit extract``; see ``memaudit extract --help``."""

    model: str
    data: str
    prefix_tokens: int = 32
    suffix_tokens: int = 32
    group_by: str | None = None
    index: str | None = None
    out: str = "runs/extract"
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    batch_size: int = 64
    cache_dir: str | None = None
    no_cache: bool = False
    skip_invalid: bool = False
    report: bool = True

    def __post_init__(self):
        if self.prefix_tokens < 1 or self.suffix_tokens < 1:
            raise InputError(f"prefix_tokens and suffix_tokens must be >= 1, got {self.prefix_tokens} and {self.suffix_tokens}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetInferenceConfig:
    """Settings of ``memaudit dataset-inference``; see its ``--help``."""

    model: str
    suspect: str
    validation: str
    reference: str | None = None
    out: str = "runs/dataset-inference"
    alpha: float = 0.1
    n_splits: int = 10
    false_positive_check: bool = False
    fp_repeats: int = 50
    seed: int = 0
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    cache_dir: str | None = None
    no_cache: bool = False
    skip_invalid: bool = False
    report: bool = True

    def __post_init__(self):
        if not 0 < self.alpha < 1:
            raise InputError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.n_splits < 1 or self.fp_repeats < 1:
            raise InputError("n_splits and fp_repeats must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
