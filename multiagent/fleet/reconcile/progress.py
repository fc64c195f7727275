"""Live progress of operations: a redrawn block on a terminal, plain lines elsewhere.

No wait is silent: a terminal shows every look, with how long each agent has waited;
elsewhere (a log, CI, a journal) a line comes when something changes and, for what is
still pending, at least every REPEAT_SECONDS. Many operations at once (more than
SUMMARY_OVER, without verbose) make one line of counts per stage instead of a line per
agent. An operation that fails is said once, on stderr, when it fails.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

from multiagent.fleet.messages import PROGRESS_SECONDS, SUMMARY_OVER

if TYPE_CHECKING:  # types only: a no-change `up` need not import the operations
    from multiagent.fleet.model.operations import Operation

REPEAT_SECONDS = PROGRESS_SECONDS


class Progress:
    def __init__(
        self,
        stream: TextIO | None = None,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        err: TextIO | None = None,
        verbose: bool = False,
    ):
        self.stream = stream or sys.stdout
        self.err = err or (stream if stream is not None else sys.stderr)
        self.live = self.stream.isatty() if live is None else live
        self.clock = clock
        self.verbose = verbose
        self.drawn = 0
        self.last: dict[str, tuple[str, float]] = {}  # name -> (text, when printed)
        self.last_summary: tuple[str, float] = ("", 0.0)
        self.failures_said: set[str] = set()  # said on stderr: the report need not repeat

    def __call__(self, operations: Sequence[Operation]) -> None:
        if self.live:  # the block shows a failure; the report then says it on stderr
            self._redraw(operations)
            return
        self._say_failures(operations)
        if len(operations) > SUMMARY_OVER and not self.verbose:
            self._summary(operations)
            return
        now = self.clock()
        for op in operations:
            if op.failed:
                continue  # said on stderr
            text, when = self.last.get(op.name, ("", 0.0))
            repeat = not op.done and now - when >= REPEAT_SECONDS
            if op.text != text or repeat:
                self.last[op.name] = (op.text, now)
                self.stream.write(f"{op.name}: {op.text}{_waited(op)}\n")
        self.stream.flush()

    def _say_failures(self, operations: Sequence[Operation]) -> None:
        for op in operations:
            if op.failed and op.name not in self.failures_said:
                self.failures_said.add(op.name)
                self.err.write(f"{op.name}: {op.text}\n")
                self.err.flush()

    def _summary(self, operations: Sequence[Operation]) -> None:
        now = self.clock()
        counts = Counter(op.stage for op in operations)
        text = ", ".join(f"{n} {stage}" for stage, n in sorted(counts.items()))
        said, when = self.last_summary
        pending = [op for op in operations if not op.done]
        if text == said and (not pending or now - when < REPEAT_SECONDS):
            return
        self.last_summary = (text, now)
        longest = max((op.elapsed or 0.0 for op in pending), default=0.0)
        waited = f" (longest wait {longest:.0f}s)" if pending else ""
        self.stream.write(f"{len(operations)} agents: {text}{waited}\n")
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
