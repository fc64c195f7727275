"""The errors a tf-fleet command reports to its user: one line each, and an exit status.

Every user-facing error derives from `UserError`, so the command line's one handler
cannot miss a new kind; anything else is a bug, reported with the path of a log.
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_INVALID = 2


class UserError(Exception):
    """A known failure the user can act on; `lines()` is what the command prints."""

    exit_status = EXIT_FAILED

    def lines(self) -> list[str]:
        return [f"error: {self}"]


class BusyError(UserError):
    """Agents run jobs, and the command would interrupt them without --force."""

    def __init__(self, busy: dict[str, str], advice: str):
        super().__init__("; ".join(f"{n}: {t}" for n, t in busy.items()))
        self.busy = busy
        self.advice = advice

    def lines(self) -> list[str]:
        return [f"{name} is busy: {text}" for name, text in self.busy.items()] + [self.advice]
