"""Process facts read from /proc: whether a pid still runs, start times precise to a
clock tick, parents, children and command lines.

psutil derives start times from the boot time in whole seconds, so they can be off by
up to a second; comparing them with file mtimes or an agent's last poll needs better.
Its process_iter reads each process's stat besides the command line asked for: a pass
over 570 processes took 42-92 ms where reading the command lines alone took 16 ms, and
`down` of 500 agents makes three passes over twice as many.
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


def parent_pid(pid: int) -> int | None:
    """The process's parent, or None when it is gone."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields is not None else None


def command_lines() -> dict[int, list[str]]:
    """{pid: its command line} of every process on the host whose command line can be
    read (a zombie's is empty and is left out)."""
    lines: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue  # gone, or hidden from this user
        words = raw.split(b"\0")
        if words[-1] == b"":
            words.pop()  # the terminating NUL
        if words:
            lines[int(entry)] = [os.fsdecode(word) for word in words]
    return lines


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


def child_count(pid: int) -> int:
    """How many child processes `pid` has: its threads' lists of children, a few reads
    where a pass over /proc reads one file per process on the host (a restart's wait
    asks about one agent every 20 ms). The kernel may skip a child that exits while the
    list is read; one that runs a phase stays on it."""
    if not _KERNEL_LISTS_CHILDREN:
        return _children_by_scan(pid)
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0  # gone
    count = 0
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children") as handle:
                count += len(handle.read().split())
        except OSError:
            continue  # the thread ended; its children went to another of the process's
    return count


def _children_by_scan(pid: int) -> int:
    """The same, for a kernel built without CONFIG_PROC_CHILDREN: every process's parent."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[1]) == pid:
                count += 1
    return count


_KERNEL_LISTS_CHILDREN = os.path.exists(f"/proc/self/task/{os.getpid()}/children")
