"""Process facts read from /proc: whether a pid still runs, and start times precise to a
clock tick.

psutil derives start times from the boot time in whole seconds, so they can be off by
up to a second; comparing them with file mtimes or an agent's last poll needs better.
"""

from __future__ import annotations

import os
import time

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat from the state (field 3) on; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def is_running(pid: int) -> bool:
    """The process exists and has not exited (a zombie waits only to be reaped). One read
    of /proc, where psutil takes two: `down` asks this of hundreds of pids in a loop."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def process_start_time(pid: int) -> float | None:
    """The process's start as a Unix time, or None when it is gone."""
    fields = _stat_fields(pid)
    try:
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
    except (OSError, ValueError):
        return None
    if fields is None:
        return None
    started_ticks = int(fields[19])  # field 22 of the whole line: starttime
    return time.time() - uptime + started_ticks / _TICKS


def child_counts() -> dict[int, int]:
    """{pid: how many child processes it has} for every process, in one pass over /proc
    (psutil's children() makes that pass once per process asked about)."""
    counts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parent = int(fields[1])
                counts[parent] = counts.get(parent, 0) + 1
    return counts
