"""What every command shares: the consoles, one-line errors, progress bars, and commands made from
configs.

A command is a config class plus a function that shows its result. ``config_command`` turns
the config's fields into the command's flags (help text and default from the field), adds
``--config FILE``, and resolves defaults <- file <- flags before the function runs.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from memaudit.errors import MemauditError, MemauditWarning
from memaudit.io.config import flag_name, resolve_config, union_members

console = Console(stderr=True)
out_console = Console()

EXIT_BAD_INPUT = 2
CONFIG_HELP = (
    "JSON or TOML file of settings (keys: the flags' names with _ for -, e.g. n_bootstrap); "
    "flags given here override it."
)


def reports_errors(command):
    """Run a command with a quiet environment; a MemauditError becomes one line on stderr and
    exit 2.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _quiet_environment()
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return command(*args, **kwargs)
        except MemauditError as e:
            console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None

    return wrapper


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """memaudit's own warnings as one ``warning:`` line; every other kind as Python shows it."""
    if issubclass(category, MemauditWarning):
        text = escape(str(message))
        console.print(f"[yellow]warning:[/] {text}", highlight=False, soft_wrap=True)
    else:
        console.print(
            warnings.formatwarning(message, category, filename, lineno, line).rstrip(),
            markup=False,
            highlight=False,
        )


def _quiet_environment() -> None:
    """No network, and no third-party progress bars over ours."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class StageBars:
    """A rich progress bar per stage, fed by the library's ``Progress`` callbacks (stage, done,
    total, note).

    When stderr is not a terminal (a log file, a pipe, CI), bars would show nothing until the
    end, so each stage is written as a plain line instead: when it starts, every
    ``LOG_EVERY_S`` seconds, and when it completes.
    """

    LOG_EVERY_S = 5.0

    def __init__(self) -> None:
        self.plain = not console.is_terminal
        self.logged: dict[str, float] = {}  # stage -> when its last line was written
        self.finished: set[str] = set()
        self.progress = Progress(
            TextColumn("{task.description:<20}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, stage: str, done: int, total: int | None, note: str = "") -> None:
        if self.plain:
            self._log(stage, done, total, note)
            return
        if not self.tasks:  # shown from the first report: a run that fails early prints nothing
            self.progress.start()
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, note=note)
        self.progress.update(self.tasks[stage], completed=done, total=total, note=note)

    def _log(self, stage: str, done: int, total: int | None, note: str) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if stage in self.finished:
            return  # its completion was already written
        if stage in self.logged and now - self.logged[stage] < self.LOG_EVERY_S and not finished:
            return
        self.logged[stage] = now
        if finished:
            self.finished.add(stage)
        count = f"{done}/{total}" if total is not None else f"{done}"
        line = f"{stage}: {count} {note}".rstrip()
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.tasks:
            self.progress.stop()


def config_command(app: typer.Typer, name: str, config_cls: type) -> Callable:
    """Register ``show(cfg)`` as command ``name`` whose flags are ``config_cls``'s fields, plus
    ``--config``.

    The command's help is ``show``'s docstring; each flag's help is its field's, with the
    default appended. Flags not given are None, so a config file can supply them.
    """

    def register(show: Callable[[Any], None]) -> Callable[[Any], None]:
        hints = typing.get_type_hints(config_cls)
        settings = [f for f in fields(config_cls) if f.init]
        params = [_parameter(f, hints[f.name]) for f in settings]
        params.append(_config_parameter())

        def command(**given):
            config_file = given.pop("config_file")
            flags = {f.name: _from_flag(f, given[f.name]) for f in settings}
            config: Any = resolve_config(config_cls, config_file=config_file, **flags)
            if isinstance(getattr(config, "device", None), str):
                from memaudit.models.hf import resolve_device

                resolve_device(config.device)  # a GPU this machine lacks fails here, not later
            show(config)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__doc__ = show.__doc__
        command.__name__ = show.__name__
        app.command(name, short_help=_summary(show.__doc__))(reports_errors(command))
        return show

    return register


def _summary(doc: str | None) -> str | None:
    """The first paragraph of a docstring on one line: the command's line in group listings."""
    if not doc:
        return None
    return " ".join(doc.strip().split("\n\n")[0].split())


def _config_parameter() -> inspect.Parameter:
    option = typer.Option(None, "--config", help=CONFIG_HELP)
    return inspect.Parameter(
        "config_file", inspect.Parameter.KEYWORD_ONLY, default=option, annotation=str | None
    )


def _parameter(f: Field, hint: Any) -> inspect.Parameter:
    meta = f.metadata
    required = f.default is MISSING and f.default_factory is MISSING
    shown = ("" if meta.get("argument") else "required") if required else _default_text(f)
    help_text = escape(meta.get("help", "")) + (" " + escape(f"[{shown}]") if shown else "")
    if meta.get("argument"):
        default = typer.Argument(... if required else None, help=help_text, show_default=False)
        annotation = str if required else str | None
        return inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
        )
    names = [flag_name(f)] + ([meta["short"]] if meta.get("short") else [])
    default = typer.Option(None, *names, help=help_text, show_default=False)
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=_cli_type(f, hint)
    )


def _cli_type(f: Field, hint: Any) -> Any:
    """The type typer parses the flag as: the field's own for scalars, text for lists and parsed
    values.
    """
    if f.metadata.get("repeat"):
        return list[str] | None
    if f.metadata.get("parse"):
        return str | None
    kind = next(k for k in union_members(hint) if k is not type(None))
    if typing.get_origin(kind) is tuple:
        return str | None
    return kind | None


def _from_flag(f: Field, value: Any) -> Any:
    if value is None:
        return None
    if f.metadata.get("negate"):
        return not value
    if f.metadata.get("repeat"):
        return tuple(value) if value else None
    return value


def _default_text(f: Field) -> str:
    """'default: X' for --help, from the field itself ('' when there is none to show)."""
    meta = f.metadata
    if meta.get("default_text"):
        return f"default: {meta['default_text']}"
    if f.default in (None, ()) or meta.get("negate") or isinstance(f.default, bool):
        return ""
    value = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
    return f"default: {value}"


def say_skipped(skipped: list[dict], listed_in: str | os.PathLike) -> None:
    """One line on the terminal when invalid records were left out (``--skip-invalid``)."""
    if not skipped:
        return
    first = skipped[0]
    where = f"{first['path']}:{first['line']}" if first.get("line") else first["path"]
    console.print(
        f"skipped {len(skipped)} invalid record(s) (first: {where}: {first['reason']}); "
        f"all are listed in {listed_in}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
