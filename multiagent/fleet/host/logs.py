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
