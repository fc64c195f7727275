"""The local interface to tf-fleet: status file, drain flag and the one-agent-per-name lock."""

from __future__ import annotations

import fcntl
import json
import os
import time

from multiagent.agent import __version__
from multiagent.vocabulary import (
    AGENT_STARTING,
    drain_file_name,
    lock_file_name,
    read_drain_flag,
    status_file_name,
)

TYPE_CHECKING = False  # no typing import at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any


class StatusFile:
    """`<run-dir>/<agent>.json`, rewritten atomically so readers never see half a file.

    The temp file is written in `tmp_dir` if given (the agent's own directory), so
    the shared run dir sees only the final rename: other agents' inotify watches on
    the run dir then ignore our status writes without waking up. Falls back to the
    run dir for good if that fails (another filesystem, not writable).
    """

    def __init__(self, run_dir: str, agent: str, tmp_dir: str | None = None):
        self.path = os.path.join(run_dir, status_file_name(agent))
        self.tmp_dir = (
            tmp_dir if tmp_dir and os.path.abspath(tmp_dir) != os.path.abspath(run_dir) else None
        )
        self.data: dict[str, Any] = {
            "agent": agent,
            "pid": os.getpid(),
            "state": AGENT_STARTING,
            "job_id": None,
            "phase": None,
            "since": time.time(),
            "last_poll": None,
            "restart_pending": False,
            "restart_reason": None,
            "drained": False,
            "server_reachable": False,
            "version": __version__,
        }

    def update(self, **changes: Any) -> None:
        """Apply changes and rewrite the file; `since` moves only when the state changes."""
        state = changes.get("state")
        if state is not None and state != self.data["state"]:
            changes.setdefault("since", time.time())
        self.data.update(changes)
        self.write()

    def write(self) -> None:
        if self.tmp_dir is not None:
            tmp = os.path.join(self.tmp_dir, f".{os.path.basename(self.path)}.{os.getpid()}.tmp")
            if self._write_via(tmp):
                return
            self.tmp_dir = None  # EXDEV, read-only, gone: the run dir it is
        self._write_via(f"{self.path}.{os.getpid()}.tmp")

    def _write_via(self, tmp: str) -> bool:
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(self.data, fh)
            os.replace(tmp, self.path)
        except OSError:
            # The status file is advisory; a full disk must not stop the agent.
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False
        return True


class DrainFlag:
    """`<run-dir>/<agent>.drain`: take no new job; content `hold` means stay down."""

    def __init__(self, run_dir: str, agent: str):
        self.path = os.path.join(run_dir, drain_file_name(agent))

    def read(self) -> str | None:
        """None if absent, else HOLD or DRAIN (see vocabulary.read_drain_flag)."""
        return read_drain_flag(self.path)


class LockHeld(Exception):
    def __init__(self, path: str, pid: str):
        self.path = path
        self.pid = pid
        super().__init__(f"{path} is held by pid {pid or '?'}")


class AgentLock:
    """`<run-dir>/<agent>.lock` (flock, holding our pid) so one name runs once per host."""

    def __init__(self, run_dir: str, agent: str):
        self.path = os.path.join(run_dir, lock_file_name(agent))
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
            finally:
                os.close(fd)
            raise LockHeld(self.path, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
