"""One command that changes the fleet at a time, per state dir: an exclusive lock on
`<state>/tf-fleet.lock`, holding the pid and command of its holder.

A forced command (`down --force`, `restart --force`) does not queue behind a safe one
that waits for jobs: it leaves `<state>/tf-fleet.supersede` (its own pid and command),
the waiting command sees it on its next look, stops with a message saying who took
over, and so lets go of the lock."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from multiagent.fleet.errors import UserError
from multiagent.fleet.host.procinfo import is_running
from multiagent.fleet.messages import PROGRESS_SECONDS
from multiagent.fleet.model.layout import Layout

LOCK_NAME = "tf-fleet.lock"
SUPERSEDE_NAME = "tf-fleet.supersede"
# How long a forced command waits for the holder to see its request and let go: the
# holder looks at least every 0.5 s while it waits for agents.
YIELD_SECONDS = 15.0


class StateLocked(UserError):
    pass


class Superseded(UserError):
    """A forced command took over while this one waited; what it waited for is the
    forced command's to end now."""

    def __init__(self, by: str, pending: list[str]):
        super().__init__(f"superseded by {by}")
        self.by = by
        self.pending = pending

    def lines(self) -> list[str]:
        lines = [f"stopped: {self.by} took over; this command stopped waiting and did no more."]
        lines += [f"  was waiting for {text}" for text in self.pending]
        return lines


def superseded_by(layout: Layout) -> str | None:
    """The forced command that asks the lock's holder to let go, if one does."""
    try:
        fd = os.open(layout.state_dir / SUPERSEDE_NAME, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        text = os.read(fd, 200).decode(errors="replace").strip()
    finally:
        os.close(fd)
    # A request whose command died before it could take it back asks nothing.
    words = text.split()
    if len(words) < 2 or not words[1].isdigit() or not is_running(int(words[1])):
        return None
    return text


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
    supersede: bool = False,
) -> Iterator[None]:
    """Hold the state dir for `command`. A second command waits, saying whom it waits
    for and how long so far (every PROGRESS_SECONDS), or with `wait` False fails.
    With `supersede`, it asks the holder to stop waiting and let go (see the module)."""
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    path = layout.state_dir / LOCK_NAME
    me = f"pid {os.getpid()} (tf-fleet {command})"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if supersede:
            _take_over(fd, path, layout, me, say or _stderr)
        else:
            _acquire(fd, path, wait, say or _stderr, every)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{me}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _try_lock(fd: int) -> bool:
    """Take the lock if no one holds it; whether we hold it now."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _take_over(
    fd: int, path: os.PathLike[str], layout: Layout, me: str, say: Callable[[str], None]
) -> None:
    if _try_lock(fd):
        return
    holder = _holder(fd)
    request = layout.state_dir / SUPERSEDE_NAME
    request.unlink(missing_ok=True)  # a link planted in its place is not followed
    req = os.open(request, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(req, me.encode())
    finally:
        os.close(req)
    say(f"asking {holder} to stop waiting (it holds {path})")
    try:
        deadline = time.monotonic() + YIELD_SECONDS
        while time.monotonic() < deadline:
            if _try_lock(fd):
                return
            time.sleep(0.05)
        raise StateLocked(
            f"{holder} did not let go of {path} within {YIELD_SECONDS:.0f} s; nothing was done"
        )
    finally:
        request.unlink(missing_ok=True)


def _acquire(
    fd: int, path: os.PathLike[str], wait: bool, say: Callable[[str], None], every: float | None
) -> None:
    interval = every if every is not None else PROGRESS_SECONDS
    next_say = 0.0
    begun = time.monotonic()
    while True:
        if _try_lock(fd):
            return
        holder = _holder(fd)
        if not wait:
            raise StateLocked(f"{holder} is changing this fleet ({path}); try again later")
        now = time.monotonic()
        if now >= next_say:
            waited = f"; {now - begun:.0f}s so far" if now > begun + 1 else ""
            say(f"waiting for {holder} to finish (it holds {path}{waited})")
            next_say = now + interval
        time.sleep(0.1)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
