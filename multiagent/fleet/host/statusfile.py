"""Reading an agent's status file (`run/<name>.json`, written by tf-agent), and judging
whether it proves anything about the process running now."""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multiagent.vocabulary import STATUS_STALE_SECONDS

MAX_BYTES = 64 * 1024  # a status file is a few hundred bytes
# The keys tf-fleet reads, and the types a well-formed file has for them.
_NUMBER = (int, float)
_TYPES: dict[str, tuple[type, ...]] = {
    "pid": (int,),
    "state": (str,),
    "job_id": (str,),
    "phase": (str,),
    "since": _NUMBER,
    "last_poll": _NUMBER,
    "restart_pending": (bool,),
    "drained": (bool,),
}


@dataclass(frozen=True)
class StatusRead:
    """What was found at a status file's path."""

    data: dict[str, Any] | None  # the content, when well-formed
    written: float | None = None  # its mtime: tf-agent rewrites it at least every 20 s
    problem: str | None = None  # why `data` is None, in words
    disk_full: bool = False  # the filesystem holding it has no space left


def read_status(path: Path) -> StatusRead:
    try:
        raw, written = _read(path)
    except FileNotFoundError:
        return StatusRead(None, problem="missing", disk_full=_full(path))
    except OSError as exc:
        return StatusRead(None, problem=f"unreadable ({exc.strerror})")
    full = _full(path)
    try:
        data = json.loads(raw)
    except ValueError:
        return StatusRead(None, written, "not JSON", full)
    if not isinstance(data, dict) or not _well_typed(data):
        return StatusRead(None, written, "malformed (a key has the wrong type)", full)
    return StatusRead(data, written, None, full)


def _read(path: Path) -> tuple[bytes, float]:
    """The file's bytes and mtime; never through a symlink, never blocking on a fifo (the
    agent's user can write in its run dir)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(MAX_BYTES), st.st_mtime
    finally:
        os.close(fd)


def _well_typed(data: dict[str, Any]) -> bool:
    for key, types in _TYPES.items():
        value = data.get(key)
        if value is None and key != "pid":
            continue
        if not isinstance(value, types) or (types != (bool,) and isinstance(value, bool)):
            return False
    return True


def _full(path: Path) -> bool:
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return False
    return stats.f_bavail == 0 or stats.f_favail == 0


def judge(
    read: StatusRead | None, pid: int | None, now: float
) -> tuple[dict[str, Any] | None, str]:
    """The status that counts for the process running now (pid), or None and why not.

    A file counts only if that process wrote it, recently. With no process running, the
    last one's file tells how it ended, however old."""
    if read is None or read.data is None:
        problem = read.problem if read else "missing"
        return None, f"status file {problem}{_because(read)}"
    if not pid:
        return read.data, ""
    writer = read.data.get("pid")
    if writer != pid:
        return None, f"status file written by pid {writer}, not by the running pid {pid}"
    if read.written is not None and now - read.written > STATUS_STALE_SECONDS:
        when = time.strftime("%H:%M:%S", time.localtime(read.written))
        return None, f"status file not written since {when}{_because(read)}"
    return read.data, ""


def _because(read: StatusRead | None) -> str:
    return ": its filesystem is full" if read and read.disk_full else ""
