"""The facts tf-fleet decides from, as plain values: supervisord's view of a process and
what an agent's status file proves about the process running now.

Pure: the supervisord edge and the status-file reader build these values, and the safe
operations, `status` and `down` judge them without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from multiagent.fleet.messages import clock
from multiagent.vocabulary import STATUS_STALE_SECONDS


class ProcessState:
    """supervisord's process states, by the name its XML-RPC interface gives
    (`statename`). Plain strings, as supervisord sends them, named once here."""

    STOPPED: Final = "STOPPED"
    STARTING: Final = "STARTING"
    RUNNING: Final = "RUNNING"
    BACKOFF: Final = "BACKOFF"
    STOPPING: Final = "STOPPING"
    EXITED: Final = "EXITED"
    FATAL: Final = "FATAL"
    UNKNOWN: Final = "UNKNOWN"
    # In supervisord's own order (supervisor/states.py), for metrics that list every one.
    ALL: Final = (STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL, UNKNOWN)
    # Not running, and supervisord will not start it again by itself.
    DOWN: Final = frozenset({STOPPED, EXITED, FATAL})
    # Failing to start: respawning (BACKOFF) or given up (FATAL).
    FAILED: Final = frozenset({FATAL, BACKOFF})
    # A process is there (starting or running).
    LIVE: Final = frozenset({RUNNING, STARTING})
    # The states a start or stop ends in.
    SETTLED: Final = frozenset({RUNNING, FATAL, EXITED, STOPPED})


@dataclass(frozen=True)
class ProcessInfo:
    name: str
    state: str  # one of ProcessState
    pid: int
    start: float  # when supervisord last started it (whole seconds), 0 if never
    now: float
    description: str
    spawnerr: str
    exitstatus: int
    log_file: str
    # When its last process exited or was stopped (whole seconds), 0 if never. (Its exit
    # status is forgotten once supervisord starts it again.)
    stop: float = 0.0

    @property
    def uptime(self) -> float | None:
        return (
            max(0.0, self.now - self.start)
            if self.state == ProcessState.RUNNING and self.start
            else None
        )

    @classmethod
    def from_rpc(cls, info: dict) -> ProcessInfo:
        return cls(
            name=info["name"],
            state=info["statename"],
            pid=info["pid"],
            start=float(info["start"]),
            now=float(info["now"]),
            description=info["description"],
            spawnerr=info.get("spawnerr", ""),
            exitstatus=info.get("exitstatus", 0),
            log_file=info.get("stdout_logfile", ""),
            stop=float(info.get("stop", 0)),
        )


@dataclass(frozen=True)
class StatusRead:
    """What was found at a status file's path."""

    data: dict[str, Any] | None  # the content, when well-formed
    written: float | None = None  # its mtime: tf-agent rewrites it at least every 20 s
    problem: str | None = None  # why `data` is None, in words
    disk_full: bool = False  # the filesystem holding it has no space left
    # Why its writer cannot replace it now (full or read-only filesystem, immutable file,
    # directory it may not write): whatever it says may be old news.
    unwritable: str | None = None


def judge(
    read: StatusRead | None, pid: int | None, now: float
) -> tuple[dict[str, Any] | None, str]:
    """The status that counts for the process running now (pid), or None and why not.

    A file counts only if that process wrote it, recently, and could write it again now
    (else its last write may have failed, and the file says what is no longer true). With
    no process running, the last one's file tells how it ended, however old."""
    if read is None or read.data is None:
        problem = read.problem if read else "missing"
        return None, f"status file {problem}{_because(read)}"
    if not pid:
        return read.data, ""
    writer = read.data.get("pid")
    if writer != pid:
        return None, f"status file written by pid {writer}, not by the running pid {pid}"
    if read.unwritable:
        # Unknown is busy from the first second: the agent's last write may have failed.
        return None, f"status file cannot be written now: {read.unwritable}"
    if read.written is not None and now - read.written > STATUS_STALE_SECONDS:
        when = clock(read.written)
        return None, f"status file not written since {when}{_because(read)}"
    return read.data, ""


def _because(read: StatusRead | None) -> str:
    return ": its filesystem is full" if read and read.disk_full else ""
