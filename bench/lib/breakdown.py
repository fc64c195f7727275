"""Where a cold start's time goes: the phases in supervisord's own log, and the CPU of
each kind of process, for a cold `tf-fleet up` and for its bare baseline alike."""

from __future__ import annotations

import os
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# supervisord's log lines start with local time to the millisecond.
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


@dataclass
class Start:
    """One cold start, in seconds from the launch (epoch `launched`)."""

    launched: float
    supervisord_up: float | None = None  # "supervisord started with pid": config parsed
    last_spawn: float | None = None
    last_running: float | None = None
    returned: float | None = None  # the command returned (tf-fleet only)
    polled: float | None = None  # the last agent's first poll (tf-fleet only)
    cpu: dict[str, float] = field(default_factory=dict)  # kind -> CPU seconds
    counts: dict[str, int] = field(default_factory=dict)  # kind -> processes
    unreachable: int = 0  # agents that logged their server unreachable


def children_before() -> float:
    """CPU of this process's waited-for children so far (the CLI, and the supervisord
    parent that parses the config before it daemonizes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def log_phases(start: Start, log: Path) -> None:
    """Fill the phases from supervisord's log."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        match = STAMP.match(line)
        if not match:
            continue
        when = time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S")) + int(match[2]) / 1000
        at = when - start.launched
        if "supervisord started with pid" in line and start.supervisord_up is None:
            start.supervisord_up = at
        elif " spawned: " in line:
            start.last_spawn = at
        elif "entered RUNNING state" in line:
            start.last_running = at


def task_cpu(pid: int) -> float:
    """CPU seconds of every thread of pid, to the nanosecond (schedstat); 0 if gone."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    except OSError:
        pass
    return total / 1e9


def tree_cpu(start: Start, supervisord_pid: int, kind_of: Callable[[list[str]], str]) -> None:
    """CPU of supervisord and of each of its children, by `kind_of(cmdline)`."""
    start.cpu["supervisord"] = task_cpu(supervisord_pid)
    start.counts["supervisord"] = 1
    try:
        children = psutil.Process(supervisord_pid).children()
    except psutil.Error:
        return
    for child in children:
        try:
            kind = kind_of(child.cmdline())
        except psutil.Error:
            continue
        start.cpu[kind] = start.cpu.get(kind, 0.0) + task_cpu(child.pid)
        start.counts[kind] = start.counts.get(kind, 0) + 1


def count_unreachable(logs_dir: Path, names: list[str]) -> int:
    """Agents whose log says their server was unreachable."""
    count = 0
    for name in names:
        try:
            text = (logs_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            continue
        count += "server unreachable" in text
    return count


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _gap(later: float | None, earlier: float | None) -> str:
    return "—" if later is None or earlier is None else f"{later - earlier:.2f} s"


def section(size: int, fleet: Start, bare: Start) -> str:
    """A markdown section comparing the two starts."""
    lines = [
        f"### Where a cold start of {size} goes (the last run of each)",
        "",
        "| Phase (from the launch) | Cold `tf-fleet up` | Bare supervisord, -S sleepers |",
        "|---|---|---|",
        f"| launch → supervisord started (its log) | {_s(fleet.supervisord_up)} | "
        f"{_s(bare.supervisord_up)} |",
        f"| supervisord started → last program spawned | "
        f"{_gap(fleet.last_spawn, fleet.supervisord_up)} | "
        f"{_gap(bare.last_spawn, bare.supervisord_up)} |",
        f"| last spawned → last RUNNING (startsecs 1) | "
        f"{_gap(fleet.last_running, fleet.last_spawn)} | "
        f"{_gap(bare.last_running, bare.last_spawn)} |",
        f"| last RUNNING → `up` returned | {_gap(fleet.returned, fleet.last_running)} | — |",
        f"| launch → last agent's first poll | {_s(fleet.polled)} | — |",
        f"| **launch → all RUNNING (and polling)** | "
        f"**{_s(max(filter(None, (fleet.returned, fleet.polled)), default=None))}** | "
        f"**{_s(bare.last_running)}** |",
    ]
    lines += ["", "| CPU, by process | Cold `tf-fleet up` | Bare supervisord, -S sleepers |"]
    lines += ["|---|---|---|"]
    for kind in ("command", "supervisord", "server", "agent", "sleeper"):
        ours, theirs = fleet.cpu.get(kind), bare.cpu.get(kind)
        if ours is None and theirs is None:
            continue
        lines.append(
            f"| {kind} | {_cpu(ours, fleet.counts.get(kind))} | "
            f"{_cpu(theirs, bare.counts.get(kind))} |"
        )
    total_ours, total_bare = sum(fleet.cpu.values()), sum(bare.cpu.values())
    lines.append(f"| **all** | **{total_ours:.2f} s** | **{total_bare:.2f} s** |")
    lines += [
        "",
        f"{fleet.unreachable} of {fleet.counts.get('agent', 0)} agents logged their server "
        "unreachable (the embedded server starts with them: a refused first contact is "
        "retried quietly for 3 s first). *command*: the `tf-fleet` process (the baseline's: none), "
        "with the supervisord parent that reads the config before it daemonizes (both "
        "have one); the rest is read from /proc when every agent has polled.",
    ]
    return "\n".join(lines)


def _cpu(value: float | None, count: int | None) -> str:
    if value is None:
        return "—"
    each = f" ({1000 * value / count:.1f} ms each of {count})" if count and count > 1 else ""
    return f"{value:.2f} s{each}"
