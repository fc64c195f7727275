"""A job's processes from /proc: who is in a phase's group or carries the job's marker,
and ending them for good.

A phase runs in its own session and process group (its leader's pid is the pgid).
Members are found by reading /proc/<pid>/stat; a process is identified by its pid and
its start time (clock ticks since boot), so a pid or pgid reused by an unrelated
process is never taken for ours. A child that left the group (`setsid`, a daemon's
double fork) still carries JOB_MARKER in its environment: /proc/<pid>/environ is read
for the processes of the agent's own uid started since the phase (or the job) began.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # no typing import at run time (start-up cost)
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
else:  # the C module: `signal` builds enums at import, CPU that every agent start pays
    import _signal as signal

# Seconds between SIGTERM and SIGKILL for what is left of a process group.
GRACE = 5.0
# The environment variable every phase process gets: the job it belongs to. It proves a
# process of a leaderless group ours after an agent restart.
JOB_MARKER = "TF_AGENT_JOB_ID"


class Proc:
    __slots__ = ("pid", "pgid", "start", "uid", "name")

    def __init__(self, pid: int, pgid: int, start: int, uid: int, name: str):
        self.pid, self.pgid, self.start, self.uid, self.name = pid, pgid, start, uid, name

    def describe(self) -> str:
        """`command line (pid N)`: read while the process lives (see end_group)."""
        return f"{command_line(self.pid) or self.name} (pid {self.pid})"


def describe(procs: list[Proc], what: str = "", limit: int = 10) -> str:
    """`N <what> process(es): a (pid 1), b (pid 2)`, for a log line or a phase's output."""
    names = [p.name for p in procs[:limit]]
    more = f", and {len(procs) - limit} more" if len(procs) > limit else ""
    what = f"{what} " if what else ""
    return f"{len(procs)} {what}process(es): {', '.join(names)}{more}"


def read_proc(pid: int, zombie: bool = False) -> Proc | None:
    """The process `pid` (None if gone, or a zombie unless `zombie`)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    name = raw[raw.find("(") + 1 : raw.rfind(")")]
    fields = raw[raw.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5): pgrp is field 5, starttime field 22.
    if len(fields) < 20 or fields[0] == "X" or (fields[0] == "Z" and not zombie):
        return None
    return Proc(pid, int(fields[2]), int(fields[19]), uid, name)


def start_time(pid: int) -> int | None:
    """When `pid` started (a zombie's too: a phase's shell may be done before we look)."""
    proc = read_proc(pid, zombie=True)
    return proc.start if proc else None


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read(4096)
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def has_marker(pid: int, value: str) -> bool:
    """True if `pid` carries JOB_MARKER=value in its environment."""
    needle = f"{JOB_MARKER}={value}".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return needle in fh.read().split(b"\0")
    except OSError:
        return False


def group_members(pgid: int) -> list[Proc]:
    """Every live process whose process group is `pgid`."""
    return job_processes(pgid, lambda proc: True, None, 0)


def job_processes(
    pgid: int, is_ours: Callable[[Proc], bool], job_id: str | None, since: int
) -> list[Proc]:
    """In one look at /proc: the members of group `pgid` that `is_ours` accepts, and
    (with `job_id`) every other process of our uid started at or after `since` (clock
    ticks since boot) that carries the job's marker. pgid 0 means no group."""
    found = []
    me, uid = os.getpid(), os.geteuid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        proc = read_proc(int(entry))
        if proc is None or proc.pid == me:
            continue
        if pgid and proc.pgid == pgid:
            if is_ours(proc):
                found.append(proc)
        elif (
            job_id is not None
            and proc.uid == uid
            and proc.start >= since
            and has_marker(proc.pid, job_id)
        ):
            found.append(proc)
    return found


def end_group(pgid: int, is_ours: Callable[[Proc], bool], grace: float = GRACE) -> list[Proc]:
    """SIGTERM what is left of group `pgid`, SIGKILL what is still there after `grace` s.

    Only members `is_ours` accepts are signalled (see end_processes)."""
    return end_processes(lambda: job_processes(pgid, is_ours, None, 0), grace)


def end_job_processes(
    job_id: str,
    since: int,
    pgid: int = 0,
    is_ours: Callable[[Proc], bool] | None = None,
    grace: float = GRACE,
) -> list[Proc]:
    """End what is left of group `pgid` (members `is_ours` accepts) and every process of
    our uid started since `since` that carries the job's marker, wherever it went."""
    accept = is_ours or (lambda proc: True)
    return end_processes(lambda: job_processes(pgid, accept, job_id, since), grace)


def end_processes(find: Callable[[], list[Proc]], grace: float = GRACE) -> list[Proc]:
    """SIGTERM the processes `find` returns, SIGKILL those still there after `grace` s.

    `find` is asked again before each round, so each process is signalled by pid while
    it still is the same process (pid and start time read again just before). Returns
    every process signalled, each `name` set to its description (see describe()).
    """
    signalled: dict[tuple[int, int], Proc] = {}
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while True:
        left = find()
        if not left:
            break
        now = time.monotonic()
        if now >= deadline:
            sig = signal.SIGKILL
        for proc in left:
            key = (proc.pid, proc.start)
            if key not in signalled:
                proc.name = proc.describe()  # while it lives: its command line
            if (key not in signalled or sig == signal.SIGKILL) and _kill(proc.pid, sig):
                signalled.setdefault(key, proc)
        if sig == signal.SIGKILL and now >= deadline + grace:
            break  # unkillable (D state): give up rather than hang the agent
        time.sleep(0.05)
    return list(signalled.values())


def dead_job_member(pgid: int, leader_start: int, job_id: str) -> Callable[[Proc], bool]:
    """The test for `end_group` of a group recorded by an agent that is gone.

    With its leader (pid == pgid) alive and started when recorded, the whole group is
    the job's: a pgid lives as long as any member, so it cannot have been reused. With
    a leader of another start time, the pgid was reused: nothing is the job's. With no
    leader, a member is the job's if it started after the leader and carries the job's
    marker in its environment.
    """
    leader = read_proc(pgid)
    if leader is not None and leader.pgid == pgid:
        verdict = leader.start == leader_start
        return lambda proc: verdict and proc.start >= leader_start
    return lambda proc: proc.start >= leader_start and has_marker(proc.pid, job_id)


def _kill(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""
