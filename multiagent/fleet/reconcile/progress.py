"""Live progress of operations: a redrawn block on a terminal, plain lines elsewhere.

No wait is silent: a terminal shows every look, with how long each agent has waited;
elsewhere (a log, CI) a line comes when something changes and, for what is still
pending, at least every REPEAT_SECONDS.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # types only: a no-change `up` need not import the operations
    from multiagent.fleet.model.operations import Operation

REPEAT_SECONDS = 60.0


class Progress:
    def __init__(
        self,
        stream: TextIO | None = None,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.clock = clock
        self.drawn = 0
        self.last: dict[str, tuple[str, float]] = {}  # name -> (text, when printed)

    def __call__(self, operations: Sequence[Operation]) -> None:
        if self.live:
            self._redraw(operations)
            return
        now = self.clock()
        for op in operations:
            text, when = self.last.get(op.name, ("", 0.0))
            repeat = not op.done and now - when >= REPEAT_SECONDS
            if op.text != text or repeat:
                self.last[op.name] = (op.text, now)
                self.stream.write(f"{op.name}: {op.text}{_waited(op)}\n")
        self.stream.flush()

    def _redraw(self, operations: Sequence[Operation]) -> None:
        width = max((len(op.name) for op in operations), default=0)
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F")  # back to the block's first line
        for op in operations:
            self.stream.write(f"\x1b[2K{op.name.ljust(width)}  {op.text}{_waited(op)}\n")
        self.drawn = len(operations)
        self.stream.flush()


def _waited(op: Operation) -> str:
    if op.done or op.elapsed is None:
        return ""
    return f" ({op.elapsed:.0f}s)"
