"""Program entries waiting for their swap (`supervisor/pending/<name>.conf`).

A changed `[program:x]` written into the directory supervisord includes would be applied
by anyone's `supervisorctl update` (or a reload, or a reboot) at once, stopping the agent
mid-job. So a change to a loaded program is staged here, in the state dir, and moved into
place only at the swap, once the agent is idle and has exited.
"""

from __future__ import annotations

from collections.abc import Iterable

from multiagent.fleet.host.files import (
    PRIVATE,
    PRIVATE_DIR,
    make_dir,
    read_text,
    write_atomic,
    write_if_changed,
)
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.supervisord.client import SupervisorTarget


def stage(layout: Layout, name: str, text: str) -> bool:
    """Keep `text` as the program entry `name` gets at its swap; whether it changed."""
    if not layout.pending_dir.is_dir():
        make_dir(layout.pending_dir, PRIVATE_DIR)  # entries hold `environment:` values
    return write_if_changed(layout.pending_program(name), text, PRIVATE)


def staged(layout: Layout) -> set[str]:
    directory = layout.pending_dir
    return {p.stem for p in directory.glob("*.conf")} if directory.is_dir() else set()


def drop(layout: Layout, name: str) -> None:
    layout.pending_program(name).unlink(missing_ok=True)


def drop_others(layout: Layout, keep: Iterable[str]) -> None:
    """Forget staged entries no longer pending (a change undone in the fleet file, an
    agent removed)."""
    for name in staged(layout) - set(keep):
        drop(layout, name)


def install(layout: Layout, target: SupervisorTarget, name: str) -> None:
    """The swap moment: the staged entry becomes the program file supervisord reads."""
    text = read_text(layout.pending_program(name))
    if text is None:
        return  # nothing staged: the file in place is the new entry already
    write_atomic(target.program_file(name), text, PRIVATE)
    drop(layout, name)
