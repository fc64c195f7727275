"""The words tf-fleet, tf-agent, the local server and the connectors share, in one place.

Imports nothing: tf-agent loads it before its first poll, and every side can use it
without pulling in another side's modules. A group of words is a plain class of string
(or number) constants, as supervisord's own `states.py` does, not an `enum`: importing
`enum` brings `re` and `functools` with it, and tf-agent's start-up avoids it on purpose
(measured, see README.rst and tests/agent/test_agent_startup.py). The values are the
strings on the wire and in files, so they compare with what a server or a status file says.
"""

from __future__ import annotations

import os  # loaded by the interpreter before any module: no start-up cost

TYPE_CHECKING = False  # no typing import at run time (tf-agent start-up)
if TYPE_CHECKING:
    from typing import Final, NoReturn


class Phase:
    """Phases of a job, in the order an agent runs them; cleanup always runs last."""

    SETUP: Final = "setup"
    PROVISION: Final = "provision"
    FIRMWARE_UPDATE: Final = "firmware_update"
    TEST: Final = "test"
    ALLOCATE: Final = "allocate"
    RESERVE: Final = "reserve"
    CLEANUP: Final = "cleanup"
    # The phases a job asks for, in order; cleanup follows whatever happened.
    BEFORE_CLEANUP: Final = (SETUP, PROVISION, FIRMWARE_UPDATE, TEST, ALLOCATE, RESERVE)
    ALL: Final = (*BEFORE_CLEANUP, CLEANUP)
    # Phases whose job section (`<phase>_data`) a job may carry, and those with attachments.
    WITH_DATA: Final = (PROVISION, FIRMWARE_UPDATE, TEST, ALLOCATE, RESERVE)
    WITH_ATTACHMENTS: Final = (PROVISION, FIRMWARE_UPDATE, TEST)


class JobState:
    """Job states on the server: waiting, then each phase's name, then a final one."""

    WAITING: Final = "waiting"
    RUNNING: Final = "running"  # the local server's state of a job handed out, before its phase
    ALLOCATED: Final = "allocated"  # an allocated device waits for the job(s) that use it
    COMPLETE: Final = "complete"
    COMPLETED: Final = "completed"  # upstream's older spelling, still accepted
    CANCELLED: Final = "cancelled"
    FINAL: Final = (COMPLETE, COMPLETED, CANCELLED)
    # The order a job moves through before a final state: an allocated device holds the
    # job between `allocate` and `reserve`. Named, so no one orders states by slicing phases.
    ORDER: Final = (
        WAITING,
        RUNNING,
        Phase.SETUP,
        Phase.PROVISION,
        Phase.FIRMWARE_UPDATE,
        Phase.TEST,
        Phase.ALLOCATE,
        ALLOCATED,
        Phase.RESERVE,
        Phase.CLEANUP,
    )


class AgentState:
    """An agent's state (the status file's `state`, and what the server shows): a phase's
    name while a job runs, else one of these."""

    STARTING: Final = "starting"
    WAITING: Final = "waiting"
    OFFLINE: Final = "offline"
    MAINTENANCE: Final = "maintenance"
    DRAINED: Final = "drained"
    RESTARTING: Final = "restarting"
    STOPPED: Final = "stopped"
    RESTART_REQUESTED: Final = "restart"  # set on the server: restart when idle
    # What the server's pages show for an agent tf-fleet removed (see REMOVED_COMMENT);
    # no agent is ever in it.
    REMOVED: Final = "removed"
    # Up, but not polling for jobs.
    QUIET: Final = (OFFLINE, MAINTENANCE, DRAINED)
    ALL: Final = (STARTING, WAITING, *Phase.ALL, *QUIET, RESTARTING, STOPPED)


class DrainMode:
    """The drain flag's first line: DRAIN takes no new job and stays up; HOLD also exits 0
    once idle, so supervisord leaves the agent down until `up` swaps its program. A DRAIN
    flag's second line, if any, is the operator's reason (never after HOLD: a tf-agent
    older than the reason takes anything but exactly `hold` for DRAIN)."""

    DRAIN: Final = "drain"
    HOLD: Final = "hold"


# What the server shows of an agent tf-fleet drained (tf-agent and upstream agents
# alike): upstream's `offline`, as its admins set it, with a comment everyone reads.
# The comment's start tells a drain from an admin's offline, which a resume leaves alone.
DRAINED_COMMENT = "drained by tf-fleet"
DRAIN_REASON_MAX = 200  # characters of a reason kept in the flag and the comment
# The last word tf-fleet posts for an agent it removed from the fleet: the server keeps
# showing the name until the agent TTL, marked as gone on purpose.
REMOVED_STATE = "offline"
REMOVED_COMMENT = "removed from the fleet by tf-fleet"


def drained_comment(reason: str = "") -> str:
    """The comment of a drained agent on the server."""
    return f"{DRAINED_COMMENT}: {reason}" if reason else DRAINED_COMMENT


def is_drained_comment(comment: str) -> bool:
    return comment == DRAINED_COMMENT or comment.startswith(DRAINED_COMMENT + ": ")


def clean_reason(reason: str) -> str:
    """A reason as the flag file and the server keep it: one line, bounded."""
    return " ".join(reason.split())[:DRAIN_REASON_MAX]


def drain_flag_text(mode: str, reason: str = "") -> str:
    """The drain flag's content (see DrainMode)."""
    reason = clean_reason(reason) if mode == DrainMode.DRAIN else ""
    return f"{mode}\n{reason}\n" if reason else f"{mode}\n"


class AgentExit:
    """tf-agent's exit statuses; tf-fleet's program entries and checks rely on them
    (supervisord restarts an agent that exits RESTART, and leaves one that exits STOPPED)."""

    STOPPED: Final = 0
    RESTART: Final = 1
    BAD_CONFIG: Final = 2
    NAME_TAKEN: Final = 3
    INTERNAL_ERROR: Final = 70  # a bug in tf-agent (EX_SOFTWARE)


class PhaseStatus:
    """Phase exit statuses with a meaning of their own, beside a command's plain status."""

    # A device connector's "the device could not be recovered": the agent goes offline
    # once the job is over.
    RECOVERY_FAILED: Final = 46
    # tf-agent failed itself in that phase (a bug, a dead agent's job closed by its
    # successor): not the device's verdict.
    AGENT_ERROR: Final = 100
    KILLED: Final = 247  # -SIGKILL % 256, as upstream reports a killed phase


# tf-agent rewrites its status file at least this often, busy or idle, so that tf-fleet
# can tell a live writer from one that cannot write (a full disk): a file older than
# STATUS_STALE_SECONDS proves nothing, and its agent counts as busy.
STATUS_REFRESH_SECONDS = 20
STATUS_STALE_SECONDS = 60

# Where upstream's agent looks for its restart file, unless configured otherwise.
DEFAULT_RESTART_DIR = "/tmp"
RESTART_FILE_PREFIX = "TESTFLINGER-DEVICE-RESTART-"


def status_file_name(agent: str) -> str:
    """The agent's status file in the run dir: written by tf-agent, read by tf-fleet."""
    return f"{agent}.json"


def drain_file_name(agent: str) -> str:
    """The drain flag in the run dir: written by tf-fleet, read by tf-agent."""
    return f"{agent}.drain"


def restart_file_name(agent: str) -> str:
    """Upstream's restart request, in the restart dir (usually /tmp)."""
    return RESTART_FILE_PREFIX + agent


def job_record_path(execution_basedir: str, agent: str) -> str:
    """tf-agent's record of the job it runs, beside the job rundirs (a dot name: never
    taken for a job id's rundir)."""
    return os.path.join(execution_basedir, f".tf-agent-job-{agent.replace('/', '_')}.json")


# A unit as upstream writes it too ("5min", "2 hours"): every spelling names one of these.
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_UNIT_WORDS = {
    **{w: "s" for w in ("s", "sec", "secs", "second", "seconds")},
    **{w: "m" for w in ("m", "min", "mins", "minute", "minutes")},
    **{w: "h" for w in ("h", "hr", "hrs", "hour", "hours")},
    **{w: "d" for w in ("d", "day", "days")},
    **{w: "w" for w in ("w", "week", "weeks")},
}


def parse_duration(value: object) -> float:
    """Seconds in '45s', '30m', '6h', '7d', '2w', compound forms ('1h30m', '1 hour 30 min')
    or a plain number of seconds. The one parser of durations: the fleet file, the
    command line and the server's reservation timeouts. Raises ValueError naming what was
    wrong; zero is allowed (the caller says whether it makes sense), negative and empty
    values are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a duration such as 6h, 30m or 90s, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        seconds = _parse_duration_text(value)
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"expected a duration such as 6h, 30m or 90s, got {value!r}")
    return seconds


def _parse_duration_text(text: str) -> float:
    compact = text.strip().lower().replace(" ", "")
    if not compact[:1].isdigit():
        _bad_duration(text)
    try:
        return float(compact)
    except ValueError:
        pass
    total, pos = 0.0, 0
    while pos < len(compact):
        start = pos
        while pos < len(compact) and (compact[pos].isdigit() or compact[pos] == "."):
            pos += 1
        number = compact[start:pos]
        start = pos
        while pos < len(compact) and compact[pos].isalpha():
            pos += 1
        unit = _UNIT_WORDS.get(compact[start:pos])
        if not number or number.count(".") > 1 or number == "." or unit is None:
            _bad_duration(text)
        total += float(number) * _DURATION_UNITS[unit]
    return total


def _bad_duration(text: str) -> NoReturn:
    raise ValueError(f"expected a duration such as 6h, 30m or 90s, got {text!r}")


def read_drain_flag(path: str) -> str | None:
    """The drain flag at `path`: None when absent, else HOLD or DRAIN."""
    found = read_drain(path)
    return None if found is None else found[0]


def read_drain(path: str) -> tuple[str, str] | None:
    """The drain flag at `path` and its reason: None when absent, else (HOLD or DRAIN,
    reason or ""). The first line decides (a flag of one word, as older tf-fleets wrote,
    reads as before). A flag that is there but is no regular file (a symlink is not
    followed, a fifo not blocked on) or is unreadable counts as DRAIN: taking no job is
    the safe side."""
    import os  # here: the module itself imports nothing

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return DrainMode.DRAIN, ""
    try:
        if os.fstat(fd).st_mode & 0o170000 != 0o100000:  # not a regular file
            return DrainMode.DRAIN, ""
        content = os.read(fd, 4 * DRAIN_REASON_MAX + 64).decode("utf-8", "replace")
    except OSError:
        return DrainMode.DRAIN, ""
    finally:
        os.close(fd)
    first, _, rest = content.strip().partition("\n")
    if first.strip() == DrainMode.HOLD and not rest.strip():
        return DrainMode.HOLD, ""
    return DrainMode.DRAIN, clean_reason(rest)


# The environment variable tf-fleet gives a tf-agent program: supervisord's stopwaitsecs,
# the seconds between its SIGTERM and its SIGKILL (cleanup after a SIGTERM fits in them).
STOPWAITSECS_ENV = "TF_AGENT_STOPWAITSECS"
