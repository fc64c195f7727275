"""What is on disk and in supervisord now, for plan.py to compare with the rendering."""

from __future__ import annotations

from dataclasses import replace

from . import plan as planning
from . import triggers
from .applied import digest, read_applied
from .context import Context
from .files import read_text
from .ownership import check_names_free, is_ours
from .plan import Observed, Plan
from .procinfo import process_start_time
from .vocabulary import HOLD

# /proc/uptime and start ticks are precise to 10 ms; mtimes to the nanosecond
CLOCK_SLACK = 0.05


def managed_programs(ctx: Context, loaded: dict[str, str]) -> set[str]:
    """Programs of this fleet: a program file with this fleet's marker, or (in its own
    private supervisord) anything supervisord has."""
    names: set[str] = set()
    directory = ctx.target.program_dir
    suffix = ctx.target.program_suffix
    if directory.is_dir():
        for path in directory.glob(f"*{suffix}"):
            if is_ours(ctx, path):
                names.add(path.name[: -len(suffix)])
    if ctx.target.mode == "private":
        names |= set(loaded)
    return names


def observe(ctx: Context) -> Observed:
    loaded: dict[str, str] = {}
    started: dict[str, float] = {}
    if ctx.supervisor.is_running():
        for name, info in ctx.supervisor.processes().items():
            loaded[name] = info.state
            if info.pid:
                started[name] = process_start_time(info.pid) or info.start
    desired_files = ctx.rendering.all_files()
    disk = {path: read_text(path) for path in desired_files}
    modified = {}
    for program in ctx.rendering.programs.values():
        for path in program.config_files:
            try:
                modified[path] = path.stat().st_mtime - CLOCK_SLACK
            except FileNotFoundError:
                pass
    held = frozenset(
        n for n in ctx.rendering.programs if triggers.read_drain(ctx.layout, n) == HOLD
    )
    return Observed(
        disk=disk,
        managed=frozenset(managed_programs(ctx, loaded)),
        loaded=loaded,
        started=started,
        modified=modified,
        held=held,
    )


def pending_in_supervisor(ctx: Context, observed: Observed) -> frozenset[str]:
    """Programs whose file on disk is not what supervisord has loaded."""
    applied = read_applied(ctx)
    if applied is not None:
        loaded = [p for n, p in ctx.rendering.programs.items() if n in observed.loaded]
        if all(applied.get(p.name) == digest(observed.disk.get(p.program_path)) for p in loaded):
            return frozenset()
    return frozenset(ctx.supervisor.reload_config()[1])


def make_plan(ctx: Context) -> Plan:
    """What `up` would do; a program name another owner holds is a validation error."""
    observed = observe(ctx)
    check_names_free(ctx, observed.loaded)
    if ctx.supervisor.is_running():
        observed = replace(observed, pending_in_supervisor=pending_in_supervisor(ctx, observed))
    return planning.make_plan(ctx.rendering.programs, observed)
