"""tf-agent's log: one line per record to stderr (supervisord's log of the program) and to
the agent's daily file, in the format upstream's agent uses.

The standard `logging` package brings traceback, tokenize, textwrap, threading, weakref and
string into every agent: several ms of CPU at each start, paid by hundreds of agents at
once on a cold `tf-fleet up` (bench/). tf-agent needs little of it: named loggers, one
level, two sinks, one format. Until `configure` is called (tf-agent's modules used
in-process, as the test suite does), records go to the standard `logging` package, so
nothing is lost and its tools still see them.
"""

from __future__ import annotations

import _thread
import sys
import time

TYPE_CHECKING = False  # no typing import at run time (start-up cost)
if TYPE_CHECKING:
    from collections.abc import Callable

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
LEVEL_NAMES = {
    DEBUG: "DEBUG",
    INFO: "INFO",
    WARNING: "WARNING",
    ERROR: "ERROR",
    CRITICAL: "CRITICAL",
}
_BY_NAME = {
    **{name: level for level, name in LEVEL_NAMES.items()},
    "WARN": WARNING,
    "FATAL": CRITICAL,
    "NOTSET": 0,
}


def level_named(name: object, default: int = INFO) -> int:
    """The level a config's `logging_level` names (any case); `default` for anything else."""
    return _BY_NAME.get(str(name).strip().upper(), default)


class _Sinks:
    """Where records go once the agent has configured its log (process-wide)."""

    configured = False
    level = INFO
    writers: list[Callable[[str, float], None]] = []
    lock = _thread.allocate_lock()  # job threads and the metrics thread log too


def configure(level: int, writers: list[Callable[[str, float], None]]) -> None:
    """From now on records at `level` or above are written, as one line, by each writer
    (called with the line and the record's epoch)."""
    _Sinks.level = level
    _Sinks.writers = list(writers)
    _Sinks.configured = True


def console(line: str, _created: float) -> None:
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr closed or full: the file still has the line


def stamp(created: float) -> str:
    """`2026-11-29 14:09:09,134`: logging's default asctime, local time."""
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
        + f",{int(created % 1 * 1000):03d}"
    )


class Logger:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def debug(self, msg: str, *args: object) -> None:
        self.log(DEBUG, msg, args)

    def info(self, msg: str, *args: object) -> None:
        self.log(INFO, msg, args)

    def warning(self, msg: str, *args: object) -> None:
        self.log(WARNING, msg, args)

    def error(self, msg: str, *args: object) -> None:
        self.log(ERROR, msg, args)

    def exception(self, msg: str, *args: object) -> None:
        """An error with the traceback of the exception being handled."""
        self.log(ERROR, msg, args, with_traceback=True)

    def log(
        self, level: int, msg: str, args: tuple[object, ...], with_traceback: bool = False
    ) -> None:
        if not _Sinks.configured:
            import logging

            logging.getLogger(self.name).log(level, msg, *args, exc_info=with_traceback)
            return
        if level < _Sinks.level:
            return
        created = time.time()
        try:
            text = msg % args if args else msg
        except (TypeError, ValueError, KeyError):  # a bad format must not lose the record
            text = f"{msg} {args!r}"
        if with_traceback:
            import traceback

            text = f"{text}\n{traceback.format_exc().rstrip()}"
        line = f"{stamp(created)} {LEVEL_NAMES.get(level, level)} {self.name}: {text}\n"
        with _Sinks.lock:
            for write in _Sinks.writers:
                write(line, created)


_loggers: dict[str, Logger] = {}


def get(name: str) -> Logger:
    logger = _loggers.get(name)
    if logger is None:
        logger = _loggers[name] = Logger(name)
    return logger
