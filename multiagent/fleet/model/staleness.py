"""Whether a running program still matches the installed tf-fleet. Pure: the shell
(`host/installed.py`) looks at the files and processes.

Two ways an in-place upgrade leaves an agent behind without changing its program entry's
text: the files its entry names are gone (a reinstall elsewhere removed the old
`boot.py`: its next start fails), or the code it imported at start has been replaced
(it runs the old version until something restarts it).
"""

from __future__ import annotations

import shlex

from multiagent.fleet.messages import clock

ENTRY_STALE = "program entry stale"
CODE_CHANGED = "code changed since start"


def command_of(program_text: str | None) -> list[str]:
    """The words of the `command=` line of a `[program:x]` entry (`%%` is `%` there)."""
    for line in (program_text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "command":
            value = value.replace("%%", "%")
            if not any(c in value for c in "'\"\\"):
                return value.split()  # no quoting: the same words, a tenth of the time
            try:
                return shlex.split(value)
            except ValueError:
                return []
    return []


def entry_files(program_text: str | None) -> list[str]:
    """The files the command must find to start: the program, if named by its path, and a
    script given by path (`python -S /x/agent/boot.py`)."""
    words = command_of(program_text)
    files = [w for w in words[:1] if w.startswith("/")]
    files += [w for w in words[1:] if w.startswith("/") and w.endswith(".py")][:1]
    return files


def entry_stale(missing: list[str]) -> str | None:
    if not missing:
        return None
    names = ", ".join(sorted({m.rsplit("/", 1)[-1] for m in missing}))
    return f"{ENTRY_STALE}: {names} missing"


def code_changed(old_version: str | None, new_version: str, changed_at: float) -> str:
    """What to say of an agent that started before the installed code last changed."""
    if old_version and old_version != new_version:
        return f"{CODE_CHANGED}: tf-fleet {old_version} -> {new_version}"
    when = clock(changed_at)
    return f"{CODE_CHANGED}: tf-fleet {new_version} (its files changed at {when})"
