"""Reading an agent's status file (`run/<name>.json`, written by tf-agent); what it proves
is judged in `model/facts.py`."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from multiagent.fleet.model.facts import StatusRead

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
