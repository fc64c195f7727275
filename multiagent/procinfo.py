"""Process start times precise to a clock tick.

psutil derives start times from the boot time in whole seconds, so they can be off by
up to a second; comparing them with file mtimes or an agent's last poll needs better.
"""

from __future__ import annotations

import os
import time

_TICKS = os.sysconf("SC_CLK_TCK")


def process_start_time(pid: int) -> float | None:
    """The process's start as a Unix time, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
    except (OSError, ValueError):
        return None
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    started_ticks = int(fields[19])  # field 22 of the whole line: starttime
    return time.time() - uptime + started_ticks / _TICKS
