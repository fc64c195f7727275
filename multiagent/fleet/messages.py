"""What tf-fleet says, in one voice: the words for situations every command meets, and
the lines a command prints as things happen.

Each line goes out when its event happens (flushed, so a pipe, a journal or `| tee` sees
it then): results on stdout, errors on stderr, never both. An event that happens to many
agents at once is one summary line per kind (`wrote 400 files`), every line with -v.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

# More lines than this of one kind at once: one summary line instead, unless verbose.
SUMMARY_OVER = 10

# How often a wait says what it still waits for, at the least (on a terminal and off it).
PROGRESS_SECONDS = 5.0

CONFIG_HINT = "give the fleet file with `tf-fleet -c FILE` or $TF_FLEET_CONFIG"


class _Zone:
    local = False  # `tf-fleet --local`: the host's zone instead of UTC


def use_local_time(local: bool) -> None:
    _Zone.local = local


def clock(when: float) -> str:
    """A moment as the CLI prints it: UTC (as the server's pages), or with --local the
    host's zone; the zone always printed."""
    if _Zone.local:
        return time.strftime("%H:%M:%S %Z", time.localtime(when))
    return time.strftime("%H:%M:%S UTC", time.gmtime(when))


def agents_listed(names: Sequence[str]) -> str:
    """A fleet's agents in a few words: all of them when few, else first ... last."""
    ordered = sorted(names)
    if len(ordered) <= 4:
        return ", ".join(ordered) or "none"
    return f"{ordered[0]} ... {ordered[-1]} ({len(ordered)})"


def unknown_agents(unknown: Sequence[str], fleet_file: str | Path, known: Sequence[str]) -> str:
    """The one wording of a name the fleet file does not have, in every command."""
    quoted = ", ".join(f"'{n}'" for n in unknown)
    what = "unknown agent" if len(unknown) == 1 else "unknown agents"
    return f"{what} {quoted} (fleet file {fleet_file}; agents: {agents_listed(known)})"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class Lines:
    """A command's own lines: results to `out`, errors to `err`, each flushed at once.
    `quiet` (a --json run) keeps stdout for the JSON document alone."""

    def __init__(
        self,
        verbose: bool = False,
        quiet: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ):
        self.verbose = verbose
        self.quiet = quiet
        self._out = out
        self._err = err

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    @property
    def err(self) -> TextIO:
        return self._err or sys.stderr

    def say(self, text: str) -> None:
        if not self.quiet:
            self.out.write(text + "\n")
            self.out.flush()

    def error(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def many(self, each: Sequence[str], summary: str) -> None:
        """Every line of `each`, or with more than SUMMARY_OVER (and not verbose) the one
        `summary`."""
        if not each:
            return
        if self.verbose or len(each) <= SUMMARY_OVER:
            for line in each:
                self.say(line)
        else:
            self.say(summary)

    # The events of `up`, as they happen.
    def wrote(self, paths: Sequence[Path]) -> None:
        dirs = sorted({str(p.parent) for p in paths})
        where = f" under {_common(dirs)}" if dirs else ""
        self.many([f"wrote {p}" for p in paths], f"wrote {plural(len(paths), 'file')}{where}")

    def started(self, names: Sequence[str], seconds: float, server: str = "") -> None:
        agents = [n for n in names if n != server]
        also = f" (and the server, {server})" if server in names else ""
        self.many(
            [f"started {n}" for n in names],
            f"started {plural(len(agents), 'agent')}{also} in {seconds:.1f} s",
        )


def _common(dirs: list[str]) -> str:
    if len(dirs) == 1:
        return dirs[0]
    import os.path

    return os.path.commonpath(dirs)
