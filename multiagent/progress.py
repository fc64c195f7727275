"""Live progress of operations: a redrawn block on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from .operations import Operation


class Progress:
    def __init__(self, stream: TextIO | None = None, live: bool | None = None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.drawn = 0
        self.last: dict[str, str] = {}

    def __call__(self, operations: Sequence[Operation]) -> None:
        if self.live:
            self._redraw(operations)
        else:
            for op in operations:
                if self.last.get(op.name) != op.text:
                    self.last[op.name] = op.text
                    self.stream.write(f"{op.name}: {op.text}\n")
            self.stream.flush()

    def _redraw(self, operations: Sequence[Operation]) -> None:
        width = max((len(op.name) for op in operations), default=0)
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F")  # back to the block's first line
        for op in operations:
            self.stream.write(f"\x1b[2K{op.name.ljust(width)}  {op.text}\n")
        self.drawn = len(operations)
        self.stream.flush()
