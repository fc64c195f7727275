"""The agent's own log file, rotated at local midnight like upstream's agent does it.

logging.handlers' TimedRotatingFileHandler(when="midnight", backupCount=6) gives the same
file names (`testflinger-agent.log.YYYY-MM-DD`); tf-agent does not load logging at all
(see log.py), and logging.handlers alone would bring pickle, queue and socket handlers.
"""

from __future__ import annotations

import os
import sys
import time


class DailyLogFile:
    """Appends lines; at the first line of a new day the file is renamed to
    `<path>.<its day>`, and only the newest `keep` renamed files are kept."""

    def __init__(self, path: str, keep: int = 6):
        self.path = path
        self.keep = keep
        self.stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the agent's life
        self.day = _day(os.stat(path).st_mtime) if os.path.getsize(path) else _day(time.time())
        self.failed = False

    def write(self, line: str, created: float) -> None:
        try:
            day = _day(created)
            if day != self.day:
                self._rotate()  # to the name of the day its lines were written on
                self.day = day
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError) as exc:  # a full disk must not stop the agent
            if not self.failed:
                self.failed = True
                print(f"tf-agent: cannot write {self.path}: {exc}", file=sys.stderr)
        else:
            self.failed = False

    def close(self) -> None:
        self.stream.close()

    def _rotate(self) -> None:
        self.stream.close()
        try:
            if os.path.exists(self.path):
                os.replace(self.path, f"{self.path}.{self.day}")
            folder, base = os.path.split(self.path)
            backups = sorted(
                name
                for name in os.listdir(folder)
                if name.startswith(base + ".") and _is_day(name[len(base) + 1 :])
            )
            for name in backups[: max(0, len(backups) - self.keep)]:
                os.unlink(os.path.join(folder, name))
        finally:
            self.stream = open(self.path, "a", encoding="utf-8")  # noqa: SIM115


def _day(when: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(when))


def _is_day(text: str) -> bool:
    """YYYY-MM-DD (no `re`: see log.py)."""
    return (
        len(text) == 10
        and text[4] == text[7] == "-"
        and (text[:4] + text[5:7] + text[8:]).isdigit()
        and text.isascii()
    )
