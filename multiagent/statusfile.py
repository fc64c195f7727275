"""Reading an agent's status file (`run/<name>.json`, written by tf-agent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def read_status_file(path: Path) -> dict[str, Any] | None:
    """The file's content, or None when it is absent, unreadable, not JSON, or holds a
    value of the wrong type for a key tf-fleet reads: such a file counts as missing."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    for key, types in _TYPES.items():
        value = data.get(key)
        if value is None and key != "pid":
            continue
        if not isinstance(value, types) or (types != (bool,) and isinstance(value, bool)):
            return None
    return data


def current_status(data: dict[str, Any] | None, pid: int | None) -> dict[str, Any] | None:
    """A status file counts only if the process running now wrote it; with no process
    running, the last one's file tells how it ended."""
    if data and pid and data.get("pid") != pid:
        return None
    return data
