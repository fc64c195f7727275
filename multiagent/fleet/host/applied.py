"""The record of what tf-fleet last loaded into supervisord (`supervisor/applied.json`).

Whether supervisord still runs an older program entry than the file on disk is asked
with reloadConfig, which re-reads every program file (0.3 s for 200). The record answers
the same question for free when it was written for the supervisord running now.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Collection, Iterable
from pathlib import Path

from multiagent import jsonio
from multiagent.fleet.host.files import write_atomic
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.render import Rendering
from multiagent.fleet.supervisord.client import Supervisor, SupervisorError


def digest(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()


def applied_file(layout: Layout) -> Path:
    return layout.supervisor_dir / "applied.json"


def read_applied(layout: Layout, supervisor: Supervisor) -> dict[str, str] | None:
    """{program: digest of the text supervisord loaded}, if written for this supervisord;
    None when absent, unreadable, malformed or about another supervisord."""
    path = applied_file(layout)
    try:
        data = jsonio.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        _warn(f"ignoring {path}: {exc}")
        return None
    programs = data.get("programs") if isinstance(data, dict) else None
    if not isinstance(programs, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in programs.items()
    ):
        _warn(f"ignoring {path}: not a record of loaded programs")
        return None
    try:
        if data.get("supervisord_pid") != supervisor.pid():
            return None
    except SupervisorError:
        return None
    return dict(programs)


def write_applied(
    layout: Layout,
    supervisor: Supervisor,
    rendering: Rendering,
    unsettled: Iterable[str],
    loaded: Collection[str] | None = None,
) -> None:
    """Record the programs of `rendering` supervisord has loaded now, except those still
    changing. `loaded`: the programs supervisord was just seen to have, if the caller
    has looked (at 500 programs a look is 0.3 s of supervisord's time)."""
    skip = set(unsettled)
    if loaded is None:
        loaded = supervisor.processes()
    programs = {
        name: digest(program.program_text)
        for name, program in rendering.programs.items()
        if name in loaded and name not in skip
    }
    record = {"supervisord_pid": supervisor.pid(), "programs": programs}
    write_atomic(applied_file(layout), jsonio.formatted(record, indent=1, sort_keys=True) + "\n")


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)
