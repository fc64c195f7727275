"""How the agent is told to restart or stop: signals, the restart file, a self-pipe to wake up.

Signal handlers only set flags and write one byte to a pipe. Every wait in the
agent (idle polling, back-off, a running phase) selects on that pipe, so a
signal ends the wait at once instead of after the polling interval.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import stat
from typing import Any

log = logging.getLogger("tf-agent.triggers")


class Waker:
    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        try:
            os.write(self.wfd, b"x")
        except BlockingIOError:
            pass  # already full: a wake-up is pending anyway

    def drain(self) -> None:
        try:
            while os.read(self.rfd, 512):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` s; True if woken."""
        ready, _, _ = select.select([self.rfd], [], [], max(0.0, timeout))
        if ready:
            self.drain()
            return True
        return False


class Triggers:
    """Restart / stop requests from every source, as plain flags the loop reads."""

    def __init__(self, agent: str, restart_dir: str):
        self.waker = Waker()
        self.restart_reason: str | None = None
        self.stop_reason: str | None = None
        names = {agent, agent.replace("-", "")}
        self.restart_files = [
            os.path.join(restart_dir, f"TESTFLINGER-DEVICE-RESTART-{name}")
            for name in sorted(names)
        ]
        self._warned: dict[str, tuple[int, ...]] = {}
        self._uid = os.getuid()

    @property
    def restart_pending(self) -> bool:
        return self.restart_reason is not None

    def install(self) -> None:
        signal.signal(signal.SIGUSR1, self._on_usr1)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        # SIGCHLD only wakes a running phase's select when the shell exits while
        # a background grandchild still holds the output pipe open.
        signal.signal(signal.SIGCHLD, self._on_chld)

    def _on_usr1(self, _signum: int, _frame: Any) -> None:
        if self.restart_reason is None:
            self.restart_reason = "SIGUSR1"
        self.waker.wake()

    def _on_term(self, signum: int, _frame: Any) -> None:
        if self.stop_reason is None:
            self.stop_reason = signal.Signals(signum).name
        self.waker.wake()

    def _on_chld(self, _signum: int, _frame: Any) -> None:
        self.waker.wake()

    def request_restart(self, reason: str) -> None:
        if self.restart_reason is None:
            self.restart_reason = reason

    def find_restart_file(self) -> str | None:
        """A restart file we may honour: a regular file (not a symlink) owned by us or root.

        Anything else is ignored with one warning per file, since /tmp is
        world-writable and another user must not be able to restart us.
        """
        for path in self.restart_files:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                self._warned.pop(path, None)
                continue
            except OSError:
                continue
            problem = None
            if not stat.S_ISREG(st.st_mode):
                problem = "not a regular file (symlink?)"
            elif st.st_uid not in (self._uid, 0):
                problem = f"owned by uid {st.st_uid}, not {self._uid} or root"
            if problem is None:
                return path
            ident = (st.st_dev, st.st_ino, st.st_mode, st.st_uid)
            if self._warned.get(path) != ident:
                self._warned[path] = ident
                log.warning("ignoring restart file %s: %s", path, problem)
        return None

    def check_restart_file(self) -> bool:
        """Mark a restart pending if a valid restart file exists (the file stays until exit)."""
        if self.find_restart_file() is not None:
            self.request_restart("restart file")
            return True
        return False

    def consume_restart_file(self) -> None:
        for path in self.restart_files:
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_uid in (self._uid, 0):
                try:
                    os.unlink(path)
                except OSError as exc:
                    log.warning("cannot remove restart file %s: %s", path, exc)
