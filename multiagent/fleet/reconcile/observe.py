"""What is on disk and in supervisord now, for plan.py to compare with the rendering."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from multiagent.fleet.host import installed, triggers
from multiagent.fleet.host.applied import digest, read_applied
from multiagent.fleet.host.files import read_text
from multiagent.fleet.host.procinfo import process_start_time
from multiagent.fleet.host.rendered import Rendered
from multiagent.fleet.model import plan as planning
from multiagent.fleet.model.facts import ProcessInfo, ProcessState
from multiagent.fleet.model.fleetfile import Fleet
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.plan import Observed, Plan
from multiagent.fleet.model.render import Rendering
from multiagent.fleet.supervisord.client import Supervisor, SupervisorTarget
from multiagent.fleet.supervisord.ownership import check_names_free, is_ours
from multiagent.vocabulary import DrainMode

# /proc/uptime and start ticks are precise to 10 ms; mtimes to the nanosecond
CLOCK_SLACK = 0.05


def managed_programs(
    identity: str,
    target: SupervisorTarget,
    loaded: dict[str, str],
    known: dict[Path, str | None] | None = None,
) -> set[str]:
    """Programs of the fleet of this identity: a program file with its marker, or (in its
    own private supervisord) anything supervisord has. `known`: texts just read from
    disk, not read again."""
    names: set[str] = set()
    directory = target.program_dir
    suffix = target.program_suffix
    if directory.is_dir():
        for path in directory.glob(f"*{suffix}"):
            if is_ours(identity, path, (known or {}).get(path)):
                names.add(path.name[: -len(suffix)])
    if target.mode == "private":
        names |= set(loaded)
    return names


def observe(
    fleet: Fleet,
    layout: Layout,
    supervisor: Supervisor,
    rendered: Rendered,
    running: bool,
    processes: dict[str, ProcessInfo] | None = None,
) -> Observed:
    """What is on disk and in supervisord (`running`: it answers) now; `processes`: what
    supervisord said of its processes a moment ago, if the caller has just asked (a pass
    over all of them costs a quarter second at 500 agents)."""
    if processes is not None:
        infos = processes
    else:
        infos = supervisor.processes() if running else {}
    rendering = rendered.rendering
    modified = {}
    for program in rendering.programs.values():
        for path in program.config_files:
            try:
                modified[path] = path.stat().st_mtime - CLOCK_SLACK
            except FileNotFoundError:
                pass
    loaded = {name: info.state for name, info in infos.items()}
    started = {
        name: _start_time(info.pid, info.start, rendering, name, modified)
        for name, info in infos.items()
        if info.pid
    }
    # A rendering reused from disk is the text of these files, read a moment ago: a
    # second read would cost as much again.
    disk: dict[Path, str | None] = (
        dict(rendering.all_files())
        if rendered.reused
        else {path: read_text(path) for path in rendering.all_files()}
    )
    held = frozenset(
        n for n in rendering.programs if triggers.read_drain(layout, n) == DrainMode.HOLD
    )
    managed = managed_programs(fleet.identity, supervisor.target, loaded, disk)
    entry_stale, code_changed = _left_behind(layout, rendering, infos, disk)
    return Observed(
        disk=disk,
        managed=frozenset(managed),
        loaded=loaded,
        started=started,
        modified=modified,
        held=held,
        entry_stale=entry_stale,
        code_changed=code_changed,
    )


def _left_behind(
    layout: Layout,
    rendering: Rendering,
    infos: dict[str, ProcessInfo],
    disk: dict[Path, str | None],
) -> tuple[dict[str, str], dict[str, str]]:
    """The loaded programs an upgrade in place left behind: those whose entry names files
    that are gone, and those running code older than the installed."""
    entry_stale: dict[str, str] = {}
    code_changed: dict[str, str] = {}
    for name, info in infos.items():
        program = rendering.programs.get(name)
        if program is None:
            continue
        text = disk.get(program.program_path)
        stale = installed.entry_stale(text)
        if stale:
            entry_stale[name] = stale
        changed = installed.code_changed(layout, name, text, info.pid, info.start)
        if changed and info.state in ProcessState.LIVE:
            code_changed[name] = changed
    return entry_stale, code_changed


def _start_time(
    pid: int, stamp: float, rendering: Rendering, name: str, modified: dict[Path, float]
) -> float:
    """When the process started, for the plan to compare with its config files' mtimes.
    supervisord's stamp is in whole seconds, and a file last changed a second or more
    before it cannot be newer than the process; only the others need the start precise
    to a clock tick, which costs a read of /proc per process."""
    program = rendering.programs.get(name)
    newest = (
        max((modified.get(p, 0.0) for p in program.config_files), default=0.0) if program else 0.0
    )
    if newest < stamp - 1.0:
        return stamp
    return process_start_time(pid) or stamp


def pending_in_supervisor(
    layout: Layout, supervisor: Supervisor, rendering: Rendering, observed: Observed
) -> frozenset[str]:
    """Programs whose file on disk is not what supervisord has loaded."""
    applied = read_applied(layout, supervisor)
    if applied is not None:
        loaded = [p for n, p in rendering.programs.items() if n in observed.loaded]
        if all(applied.get(p.name) == digest(observed.disk.get(p.program_path)) for p in loaded):
            return frozenset()
    return frozenset(supervisor.reload_config()[1])


def look(
    fleet: Fleet,
    layout: Layout,
    supervisor: Supervisor,
    rendered: Rendered,
    running: bool | None = None,
    processes: dict[str, ProcessInfo] | None = None,
) -> Observed:
    """Everything a plan is made from; a program name another owner holds is a validation
    error. `running`: whether supervisord answers, and `processes` what it said of them,
    if the caller has just asked."""
    if running is None:
        running = supervisor.is_running()
    observed = observe(fleet, layout, supervisor, rendered, running, processes)
    check_names_free(fleet, supervisor.target, rendered.rendering.programs, observed.loaded)
    if running:
        pending = pending_in_supervisor(layout, supervisor, rendered.rendering, observed)
        observed = replace(observed, pending_in_supervisor=pending)
    return observed


def make_plan(
    fleet: Fleet,
    layout: Layout,
    supervisor: Supervisor,
    rendered: Rendered,
    observed: Observed | None = None,
) -> Plan:
    """What `up` would do, from `observed` (`up` uses what it saw for more than the plan:
    each look at supervisord's processes costs it a pass over all of them)."""
    observed = observed or look(fleet, layout, supervisor, rendered)
    return planning.make_plan(rendered.rendering.programs, observed)
