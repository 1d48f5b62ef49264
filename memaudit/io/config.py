"""Run configurations: frozen dataclasses resolved from defaults, then a config file, then CLI
flags.

Every command's settings are one frozen dataclass that lives with its capability. Each field
is declared with :func:`setting`, which holds its help text and flag name next to its
default, so the command line (``cli.common.config_command``) is generated from the class and
no default is written twice. The resolved config is written whole into results.json, so
every number can be traced to the settings that made it.

Values are checked by type whichever way they arrive: ``{"trust_remote_code": "false"}`` in a
config file is an error (a string is not a bool), not a truthy string.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from memaudit.errors import InputError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")


def setting(
    default: Any = MISSING,
    *,
    help: str,
    flag: str | None = None,
    short: str | None = None,
    default_text: str | None = None,
    negate: bool = False,
    argument: bool = False,
    repeat: bool = False,
    parse: Callable[[str], Any] | None = None,
    minimum: float | None = None,
) -> Any:
    """A config field that also describes its command-line flag.

    Parameters
    ----------
    default
        The default; omit it for a required setting.
    help
        One line for ``--help`` (the default is appended to it).
    flag, short
        The flag's name when it is not ``--field-name``, and a one-letter alias.
    default_text
        What ``--help`` says of a default of None (e.g. "the model's context").
    negate
        The flag turns the setting off (``--no-report`` for ``report=True``).
    argument
        A positional command-line argument instead of a flag.
    repeat
        A tuple given by repeating the flag (``--unlearned a --unlearned b``) rather than as
        a comma list.
    parse
        Turns the flag's text into the value (e.g. "2..8" into a list of integers).
    minimum
        The smallest value allowed (checked for flags and config files alike).

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Example:
    ...     steps: int = setting(300, help="Optimizer steps.")
    >>> resolve_config(Example, steps=None).steps, resolve_config(Example, steps=5).steps
    (300, 5)
    """
    meta = {
        "help": help,
        "flag": flag,
        "short": short,
        "default_text": default_text,
        "negate": negate,
        "argument": argument,
        "repeat": repeat,
        "parse": parse,
        "minimum": minimum,
    }
    return field(default=default, metadata=meta)


def overwrite_setting() -> Any:
    """The ``--overwrite`` setting of every command that writes a directory."""
    return setting(
        False,
        help="Write into an existing --out that holds files memaudit did not write (refused "
        "where one has the name of an output: nothing there first is replaced), or replace a "
        "finished run of other settings there.",
    )


def adapter_setting() -> Any:
    """The ``--adapter`` setting of every command that loads a model to score or generate."""
    return setting(
        None,
        help="A local PEFT/LoRA adapter dir (adapter_config.json, adapter_model.safetensors) "
        "made for --model: merged into it on load. Needs the 'peft' extra.",
    )


def device_map_setting() -> Any:
    """The ``--device-map`` setting: a model larger than one device, placed by accelerate."""
    return setting(
        None,
        help="auto, balanced, balanced_low_0 or sequential: spread the model's layers over every "
        "GPU, then the CPU (accelerate: the 'accelerate' extra). Leave --device at auto.",
    )


ENGINES = ("local", "ray")


def engine_setting() -> Any:
    """``--engine`` of the commands that score or generate (mia, extract, overlap)."""
    return setting(
        "local",
        help="local (this process) or ray (shards and batches dealt out to Ray workers, one "
        "model replica per GPU or CPU worker; pip install 'memaudit[dist]').",
    )


def ray_address_setting() -> Any:
    return setting(
        None,
        help="With --engine ray: a running cluster ('auto', 'HOST:PORT' or 'ray://HOST:PORT'); "
        "the model dirs and the cache dir must be on storage every node sees.",
        default_text="a local Ray on this machine's CPUs",
    )


def ray_workers_setting() -> Any:
    return setting(
        None,
        minimum=1,
        help="With --engine ray: model replicas (each CPU worker gets the cluster's CPUs / N "
        "torch threads).",
        default_text="one per GPU of the cluster, 2 without GPUs",
    )


def check_engine_settings(
    engine: str, ray_address: str | None, ray_workers: int | None, device_map: str | None = None
) -> None:
    """The engine settings' own rules (whether the address answers is checked at the run)."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine '{engine}'; use {' or '.join(ENGINES)}")
    if engine == "ray" and device_map is not None:
        raise InputError(
            "--engine ray holds one model replica per GPU; --device-map spreads one model over "
            "several: use one or the other"
        )
    if engine == "local" and (ray_address is not None or ray_workers is not None):
        raise InputError("--ray-address and --ray-workers need --engine ray")
    if ray_workers is not None and ray_workers < 1:
        raise InputError(f"ray_workers must be >= 1, got {ray_workers}")


BOS_RULES = ("auto", "always", "never")


def check_bos_rule(value: str) -> str:
    """``value`` if it is one of ``BOS_RULES``; else a one-line :class:`InputError`."""
    if value not in BOS_RULES:
        raise InputError(f"unknown --bos '{value}'; use {', '.join(BOS_RULES)}")
    return value


def bos_setting() -> Any:
    """The ``--bos`` setting of every command that scores texts (docs/mia.md, "The BOS rule")."""
    return setting(
        "auto",
        parse=check_bos_rule,
        help="BOS token before each text: auto (the tokenizer's own convention), always "
        "(prepend it, so the first real token is scored), never (strip one the tokenizer adds).",
    )


def flag_name(f: Field) -> str:
    """The command-line flag of a config field: its own, or ``--field-name``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def flag_of(cls: type, name: str) -> str:
    """The command-line flag of the field ``name`` of config class ``cls``."""
    return flag_name(next(f for f in fields(cls) if f.name == name))


def resolve_config(cls: type[C], *, config_file: str | None = None, **overrides: Any) -> C:
    """Build ``cls`` from its defaults, then ``config_file`` (JSON or TOML), then ``overrides``.

    Overrides that are None are treated as not given, so CLI flags only win when set. Every
    value is checked against the field's type; a wrong type is an :class:`InputError` that
    names the setting (and the config file it came from).
    """
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    if config_file is not None:
        aliases = _file_keys(fields(cls))
        for key, value in _read_config_file(Path(config_file), set(aliases)).items():
            f = aliases[key]
            if f.metadata.get("negate") and key != f.name and isinstance(value, bool):
                value = not value  # {"no_report": true} means report = false
            label = f"setting '{key}' in {config_file}"
            values[f.name] = coerce(f, hints[f.name], value, label=label)
    for name, value in overrides.items():
        if value is not None:
            values[name] = coerce(known[name], hints[name], value, label=flag_name(known[name]))
    missing = [
        f
        for f in fields(cls)
        if f.name not in values and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise InputError(f"missing required setting(s): {', '.join(_describe(f) for f in missing)}")
    return cls(**values)


def _file_keys(settings: tuple[Field, ...]) -> dict[str, Field]:
    """A config file's keys: each field's name, and its flag's name with _ for - (``splits``)."""
    keys = {}
    for f in settings:
        keys[f.name] = f
        if not f.metadata.get("argument"):
            keys.setdefault(flag_name(f).lstrip("-").replace("-", "_"), f)
    return keys


def _describe(f: Field) -> str:
    return f.name if f.metadata.get("argument") else flag_name(f)


def coerce(f: Field, hint: Any, value: Any, *, label: str) -> Any:
    """``value`` as the field's type: comma lists and JSON lists become tuples; anything else must
    match.

    ``label`` names where the value came from in the error ("--steps", "setting 'steps' in c.json").

    >>> from dataclasses import fields
    >>> from memaudit.lab.train import TrainConfig
    >>> steps = next(f for f in fields(TrainConfig) if f.name == "steps")
    >>> coerce(steps, int, "300", label="setting 'steps' in c.json")
    Traceback (most recent call last):
    ...
    memaudit.errors.InputError: setting 'steps' in c.json must be an integer, got '300'
    """
    parse = f.metadata.get("parse")
    if parse is not None and isinstance(value, str):
        value = parse(value)
    kinds = union_members(hint)
    if value is None:
        if type(None) in kinds:
            return None
        raise InputError(f"{label} must not be null")
    for kind in kinds:
        ok, converted = _convert(kind, value)
        if ok:
            if isinstance(converted, tuple) and not converted and f.default != ():
                raise InputError(f"{label} is empty")
            if isinstance(converted, float) and not math.isfinite(converted):
                raise InputError(f"{label} must be a finite number, got {converted!r}")
            low = f.metadata.get("minimum")
            if low is not None and isinstance(converted, (int, float)) and converted < low:
                raise InputError(f"{label} must be >= {low:g}, got {converted!r}")
            return converted
    names = " or ".join(_kind_name(k, isinstance(value, str)) for k in kinds if k is not type(None))
    raise InputError(f"{label} must be {names}, got {value!r}")


def union_members(hint: Any) -> tuple:
    """(int, NoneType) for ``int | None``; (hint,) for anything that is not a union."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _convert(kind: Any, value: Any) -> tuple[bool, Any]:
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        items = (
            [x.strip() for x in value.split(",") if x.strip()] if isinstance(value, str) else value
        )
        if not isinstance(items, (list, tuple)):
            return False, None
        converted = [_convert(item, _from_text(item, x)) for x in items]
        return all(ok for ok, _ in converted), tuple(v for _, v in converted)
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if kind is str:
        return isinstance(value, str), value
    return isinstance(value, kind), value


def _from_text(kind: Any, value: Any) -> Any:
    """An item of a comma list given as text: '3' -> 3 for integer lists, '0.5' -> 0.5 for float
    lists.
    """
    if not isinstance(value, str) or kind is str:
        return value
    try:
        return int(value) if kind is int else float(value) if kind is float else value
    except ValueError:
        return value


def _kind_name(kind: Any, text: bool = False) -> str:
    if typing.get_origin(kind) is tuple:
        item = {int: "integers", float: "numbers", str: "names"}.get(
            typing.get_args(kind)[0], "values"
        )
        return f"a comma list of {item}" if text else f"a list of {item}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        kind, str(kind)
    )


def _read_config_file(path: Path, known: set[str]) -> dict[str, Any]:
    if not path.is_file():
        raise InputError("config file not found", path=str(path))
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise InputError(
                    "TOML config files need Python >= 3.11; use JSON", path=str(path)
                ) from None
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
