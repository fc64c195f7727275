"""One command that changes the fleet at a time, per state dir: an exclusive lock on
`<state>/tf-fleet.lock`, holding the pid and command of its holder."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from multiagent.fleet.errors import UserError
from multiagent.fleet.model.layout import Layout

LOCK_NAME = "tf-fleet.lock"


class StateLocked(UserError):
    pass


def _holder(fd: int) -> str:
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    return text or "another tf-fleet command"


@contextmanager
def exclusive(
    layout: Layout,
    command: str,
    *,
    wait: bool = True,
    say: Callable[[str], None] | None = None,
    every: float | None = None,
) -> Iterator[None]:
    """Hold the state dir for `command`. A second command waits, saying whom it waits
    for (every 10 s on a terminal, every 60 s otherwise), or with `wait` False fails."""
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    path = layout.state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        _acquire(fd, path, wait, say or _stderr, every)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} (tf-fleet {command})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _acquire(
    fd: int, path: os.PathLike[str], wait: bool, say: Callable[[str], None], every: float | None
) -> None:
    interval = every if every is not None else (10.0 if sys.stderr.isatty() else 60.0)
    next_say = 0.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holder = _holder(fd)
        if not wait:
            raise StateLocked(f"{holder} is changing this fleet ({path}); try again later")
        now = time.monotonic()
        if now >= next_say:
            say(f"waiting for {holder} to finish (it holds {path})")
            next_say = now + interval
        time.sleep(0.1)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
