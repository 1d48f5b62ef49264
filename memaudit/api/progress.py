"""``progress=True``: one tqdm bar per stage, fed by the library's ``Progress`` callbacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memaudit.errors import InputError
from memaudit.io.progress import Progress


class TqdmBars:
    """A :class:`~memaudit.io.progress.Progress` that draws a tqdm bar per stage (tqdm.auto:
    a widget in a notebook, text in a terminal). Close it to end the bars.
    """

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int | None, note: str = "") -> None:
        from tqdm.auto import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, leave=True)
        if total is not None and bar.total != total:
            bar.total = total
        bar.n = done
        if note:
            bar.set_postfix_str(note, refresh=False)
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def progress_of(progress: bool | Callable[..., None] | None) -> tuple[Progress | None, Callable]:
    """The callback a runner gets for the API's ``progress=`` (False: none, nothing printed;
    True: tqdm bars; a callable: itself), and what closes it when the call ends.
    """
    if progress is None or progress is False:
        return None, lambda: None
    if progress is True:
        bars = TqdmBars()
        return bars, bars.close
    if callable(progress):
        return progress, lambda: None
    raise InputError(
        f"progress must be True, False or a callable (stage, done, total, note), got "
        f"{type(progress).__name__}"
    )
