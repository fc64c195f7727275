"""The record of what tf-fleet last loaded into supervisord (`supervisor/applied.json`).

Whether supervisord still runs an older program entry than the file on disk is asked
with reloadConfig, which re-reads every program file (0.3 s for 200). The record answers
the same question for free when it was written for the supervisord running now.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from multiagent.fleet.context import Context
from multiagent.fleet.host.files import write_atomic
from multiagent.fleet.supervisord.client import SupervisorError


def digest(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()


def applied_file(ctx: Context) -> Path:
    return ctx.layout.supervisor_dir / "applied.json"


def read_applied(ctx: Context) -> dict[str, str] | None:
    """{program: digest of the text supervisord loaded}, if written for this supervisord;
    None when absent, unreadable, malformed or about another supervisord."""
    path = applied_file(ctx)
    try:
        data = json.loads(path.read_text())
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
        if data.get("supervisord_pid") != ctx.supervisor.pid():
            return None
    except SupervisorError:
        return None
    return dict(programs)


def write_applied(ctx: Context, unsettled: Iterable[str]) -> None:
    """Record the programs supervisord has loaded now, except those still changing."""
    skip = set(unsettled)
    loaded = ctx.supervisor.processes()
    programs = {
        name: digest(program.program_text)
        for name, program in ctx.rendering.programs.items()
        if name in loaded and name not in skip
    }
    record = {"supervisord_pid": ctx.supervisor.pid(), "programs": programs}
    write_atomic(applied_file(ctx), json.dumps(record, indent=1, sort_keys=True) + "\n")


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)
