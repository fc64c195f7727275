"""The agent's own log file, rotated at local midnight like upstream's agent does it.

logging.handlers' TimedRotatingFileHandler(when="midnight", backupCount=6) gives the same
file names (`testflinger-agent.log.YYYY-MM-DD`), but importing logging.handlers brings
pickle, queue and socket handlers: ~0.5 MiB of every idle agent's private memory.
"""

from __future__ import annotations

import logging
import os
import re
import time

BACKUP_NAME = re.compile(r"\.\d{4}-\d{2}-\d{2}$")


class DailyLogFile(logging.FileHandler):
    """At the first record of a new day the file is renamed to `<path>.<its day>`, and
    only the newest `keep` renamed files are kept."""

    def __init__(self, path: str, keep: int = 6):
        super().__init__(path, encoding="utf-8")
        self.keep = keep
        self.day = _day(os.stat(path).st_mtime) if os.path.getsize(path) else _day(time.time())

    def emit(self, record: logging.LogRecord) -> None:
        day = _day(record.created)
        if day != self.day:
            try:
                self._rotate()
            except OSError:
                self.handleError(record)
            self.day = day
        super().emit(record)

    def _rotate(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        target = f"{self.baseFilename}.{self.day}"
        if os.path.exists(self.baseFilename):
            os.replace(self.baseFilename, target)
        folder, base = os.path.split(self.baseFilename)
        backups = sorted(
            name
            for name in os.listdir(folder)
            if name.startswith(base + ".") and BACKUP_NAME.search(name[len(base) :])
        )
        for name in backups[: max(0, len(backups) - self.keep)]:
            os.unlink(os.path.join(folder, name))
        self.stream = self._open()


def _day(when: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(when))
