"""The one progress callback type: every long-running function reports ``(stage, done, total,
note)``.

The command line shows these as one bar per stage (``cli.common.StageBars``); library code
never prints.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """``progress("scoring target", 40, 100, note="loss 2.1")``: ``done`` of ``total`` in
    ``stage``.
    """

    def __call__(self, stage: str, done: int, total: int | None, note: str = "") -> None: ...
