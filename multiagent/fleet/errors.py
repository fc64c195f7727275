"""The errors a tf-fleet command reports to its user: one line each, and an exit status.

Every user-facing error derives from `UserError`, so the command line's one handler
cannot miss a new kind; anything else is a bug, reported with the path of a log.
"""

from __future__ import annotations

from typing import Final


class ExitStatus:
    """tf-fleet's exit statuses, named once (as LSB init scripts name theirs); tf-agent's
    own are vocabulary.AgentExit."""

    OK: Final = 0
    FAILED: Final = 1  # the command could not do what was asked, or what it checked failed
    INVALID: Final = 2  # the fleet file or the command line is wrong (click's usage error too)
    BROKEN_PIPE: Final = 141  # the reader went away: 128 + SIGPIPE, as `cat | head` ends
    INTERRUPTED: Final = 130  # Ctrl-C: 128 + SIGINT, as a shell reports it


class UserError(Exception):
    """A known failure the user can act on; `lines()` is what the command prints."""

    exit_status: int = ExitStatus.FAILED

    def lines(self) -> list[str]:
        return [f"error: {self}"]


class BusyError(UserError):
    """Agents run jobs, and the command would interrupt them without --force."""

    def __init__(self, busy: dict[str, str], advice: str):
        super().__init__("; ".join(f"{n}: {t}" for n, t in busy.items()))
        self.busy = busy
        self.advice = advice

    def lines(self) -> list[str]:
        return [f"{name} is busy: {_doing(text)}" for name, text in self.busy.items()] + [
            self.advice
        ]


def _doing(text: str) -> str:
    """What a busy agent does, said of the agent (an operation's words are of the wait)."""
    for waiting, doing in (
        ("waiting for job ", "runs job "),
        ("waiting for its job to end", "runs a job"),
    ):
        if text.startswith(waiting):
            return doing + text.removeprefix(waiting)
    return text


class StaleEntryError(UserError):
    """A restart would not come back: the program entry names files that are gone."""

    def __init__(self, stale: dict[str, str]):
        super().__init__("; ".join(f"{n}: {t}" for n, t in stale.items()))
        self.stale = stale

    def lines(self) -> list[str]:
        return [
            f"{name}: {text}: a restart would not come back" for name, text in self.stale.items()
        ] + [
            "nothing was restarted; `tf-fleet up` puts each on the installed tf-fleet after its job"
        ]


class RejectedChangeError(UserError):
    """`up` of the very change a canary rejected: refused until a new change or an
    override, so that no plain `up` rolls a failed change to every agent."""

    def __init__(self, rejected: str, advice: str):
        super().__init__(rejected)
        self.rejected = rejected
        self.advice = advice

    def lines(self) -> list[str]:
        return [f"error: {self.rejected}", self.advice]
