"""Reading an agent's log: its last lines, and new lines as they come."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def tail_lines(path: Path, count: int, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `count` lines of the file (read from its last `max_bytes`); none if absent."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-count:] if count else []


# What tf-agent logs as it starts, and before every exit it makes (agent/main.py).
STARTING = " starting as "
EXITING = " exiting with status "


def ended_unannounced(lines: list[str], pid: int) -> bool:
    """Whether, in a tf-agent's log, the process before `pid` ended without logging its
    exit: killed (SIGKILL, the OOM killer) or crashed. False when the log cannot tell.

    `pid` may not have logged its start yet (supervisord has just started it again, or a
    loaded host is slow to import it): then the last process the log shows is the one
    before it, and it is gone since supervisord runs `pid` in its place."""
    starts = [i for i, line in enumerate(lines) if STARTING in line]
    current = [i for i in starts if line_has_pid(lines[i], pid)]
    end = current[-1] if current else len(lines)
    before = [i for i in starts if i < end]
    if not before:
        return False
    return not any(EXITING in line for line in lines[before[-1] : end])


def line_has_pid(line: str, pid: int) -> bool:
    return line.rstrip().endswith(f"(pid {pid})")


def follow(path: Path, emit: Callable[[str], None], interval: float = 0.25) -> None:
    """Pass on text appended to the file until interrupted, across a rotation."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        try:
            while True:
                chunk = handle.read()
                if chunk:
                    emit(chunk.decode("utf-8", "replace"))
                    continue
                try:
                    rotated = path.stat().st_size < handle.tell()
                except FileNotFoundError:
                    rotated = False  # between rotation's rename and the new file
                if rotated:
                    handle.seek(0)
                time.sleep(interval)
        except KeyboardInterrupt:
            pass
