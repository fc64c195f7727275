"""The installed tf-fleet against what runs: which agents an upgrade left behind (see
`model/staleness.py`)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import multiagent
from multiagent.fleet.errors import StaleEntryError
from multiagent.fleet.host.files import read_text
from multiagent.fleet.host.procinfo import process_start_time
from multiagent.fleet.host.statusfile import read_status
from multiagent.fleet.model import staleness
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.render import RenderContext
from multiagent.fleet.model.templating import template_dir
from multiagent.fleet.supervisord.client import SupervisorTarget


@cache
def code_changed_at() -> float:
    """When the installed code last changed: the newest mtime of the package's sources
    and templates (an install writes them all; pip keeps no older mtimes)."""
    package = Path(multiagent.__file__).resolve().parent
    paths = [*package.rglob("*.py"), *template_dir().glob("*.j2")]
    return max((p.stat().st_mtime for p in paths), default=0.0)


@cache
def agent_script() -> str:
    """tf-agent's start-up script as installed now, as program entries name it."""
    return RenderContext(python="", program_dir=Path()).agent_script


def entry_stale(program_text: str | None) -> str | None:
    """Why the program entry cannot start again (the files it names are gone), or None."""
    missing = [f for f in staleness.entry_files(program_text) if not os.path.exists(f)]
    return staleness.entry_stale(missing)


def code_changed(
    layout: Layout, name: str, program_text: str | None, pid: int | None, stamp: float
) -> str | None:
    """Why a running tf-agent of the installed code runs older code than is installed
    (it started before the code last changed), or None. `stamp`: supervisord's start
    time, in whole seconds."""
    script = agent_script()
    if (
        not pid
        or script not in (program_text or "")
        or script not in staleness.command_of(program_text)
    ):
        return None
    changed_at = code_changed_at()
    if changed_at < stamp - 1.0:
        return None  # the code is older than the process by more than the stamp's slack
    started = process_start_time(pid) or stamp
    if changed_at <= started:
        return None
    data = read_status(layout.status_file(name)).data
    version = data.get("version") if isinstance(data, dict) and data.get("pid") == pid else None
    return staleness.code_changed(
        version if isinstance(version, str) else None, multiagent.__version__, changed_at
    )


def refuse_stale_entries(target: SupervisorTarget, names: list[str]) -> None:
    """Before a restart: refuse (StaleEntryError) if an agent's entry lost its files."""
    stale = {n: why for n in names if (why := entry_stale(read_text(target.program_file(n))))}
    if stale:
        raise StaleEntryError(stale)
