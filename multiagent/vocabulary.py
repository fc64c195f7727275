"""The words tf-fleet, tf-agent, the local server and the connectors share, in one place.

Imports nothing: tf-agent loads it before its first poll, and every side can use it
without pulling in another side's modules.
"""

from __future__ import annotations

TYPE_CHECKING = False  # no typing import at run time (tf-agent start-up)
if TYPE_CHECKING:
    from typing import NoReturn

# Phases of a job, in the order an agent runs them; cleanup always runs last.
SETUP = "setup"
PROVISION = "provision"
FIRMWARE_UPDATE = "firmware_update"
TEST = "test"
ALLOCATE = "allocate"
RESERVE = "reserve"
CLEANUP = "cleanup"
PHASES = (SETUP, PROVISION, FIRMWARE_UPDATE, TEST, ALLOCATE, RESERVE)
ALL_PHASES = (*PHASES, CLEANUP)
# Phases whose job section (`<phase>_data`) a job may carry, and those with attachments.
DATA_PHASES = (PROVISION, FIRMWARE_UPDATE, TEST, ALLOCATE, RESERVE)
ATTACHMENT_PHASES = (PROVISION, FIRMWARE_UPDATE, TEST)

# Job states on the server: waiting, then each phase's name, then a final one.
JOB_WAITING = "waiting"
JOB_COMPLETE = "complete"
JOB_COMPLETED = "completed"  # upstream's older spelling, still accepted
JOB_CANCELLED = "cancelled"
JOB_ALLOCATED = "allocated"  # an allocated device waits for the job(s) that use it
JOB_RUNNING = "running"  # the local server's state of a job handed out, before its phase
FINAL_JOB_STATES = (JOB_COMPLETE, JOB_COMPLETED, JOB_CANCELLED)

# Agent states (the status file's `state`, and what the server shows): a phase's name
# while a job runs, else one of these.
AGENT_STARTING = "starting"
AGENT_WAITING = "waiting"
AGENT_OFFLINE = "offline"
AGENT_MAINTENANCE = "maintenance"
AGENT_DRAINED = "drained"
AGENT_RESTARTING = "restarting"
AGENT_STOPPED = "stopped"
AGENT_RESTART_REQUESTED = "restart"  # set on the server: restart when idle
# Up, but not polling for jobs.
QUIET_AGENT_STATES = (AGENT_OFFLINE, AGENT_MAINTENANCE, AGENT_DRAINED)
AGENT_STATES = (
    AGENT_STARTING,
    AGENT_WAITING,
    *ALL_PHASES,
    *QUIET_AGENT_STATES,
    AGENT_RESTARTING,
    AGENT_STOPPED,
)

# The drain flag's content: DRAIN takes no new job and stays up; HOLD also exits 0 once
# idle, so supervisord leaves the agent down until `up` swaps its program.
DRAIN = "drain"
HOLD = "hold"

# Exit codes of tf-agent.
EXIT_STOPPED = 0
EXIT_RESTART = 1
EXIT_BAD_CONFIG = 2
EXIT_NAME_TAKEN = 3
EXIT_INTERNAL_ERROR = 70  # a bug in tf-agent (EX_SOFTWARE)

# A device connector's phase exit status meaning "the device could not be recovered":
# the agent goes offline once the job is over.
EXIT_RECOVERY_FAILED = 46
# The phase status tf-agent reports when it failed itself in that phase (a bug, a dead
# agent's job closed by its successor): not the device's verdict.
EXIT_AGENT_ERROR = 100

# tf-agent rewrites its status file at least this often, busy or idle, so that tf-fleet
# can tell a live writer from one that cannot write (a full disk): a file older than
# STATUS_STALE_SECONDS proves nothing, and its agent counts as busy.
STATUS_REFRESH_SECONDS = 20
STATUS_STALE_SECONDS = 60

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


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> float:
    """Seconds in '45s', '30m', '6h', '7d', '2w', compound forms ('1h30m') or a plain
    number of seconds. Raises ValueError naming what was wrong; zero is allowed (the
    caller says whether it makes sense), negative and empty values are not."""
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
    total = 0.0
    number = ""
    for char in compact:
        if char.isdigit() or char == ".":
            number += char
        elif char in _DURATION_UNITS and number and number.count(".") <= 1:
            total += float(number) * _DURATION_UNITS[char]
            number = ""
        else:
            _bad_duration(text)
    if number:
        _bad_duration(text)
    return total


def _bad_duration(text: str) -> NoReturn:
    raise ValueError(f"expected a duration such as 6h, 30m or 90s, got {text!r}")


def read_drain_flag(path: str) -> str | None:
    """The drain flag at `path`: None when absent, else HOLD or DRAIN. A flag that is
    there but is no regular file (a symlink is not followed, a fifo not blocked on) or is
    unreadable counts as DRAIN: taking no job is the safe side."""
    import os  # here: the module itself imports nothing

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return DRAIN
    try:
        if os.fstat(fd).st_mode & 0o170000 != 0o100000:  # not a regular file
            return DRAIN
        content = os.read(fd, 64).decode("utf-8", "replace").strip()
    except OSError:
        return DRAIN
    finally:
        os.close(fd)
    return HOLD if content == HOLD else DRAIN
