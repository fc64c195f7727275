"""`up`: observe, plan, write, ensure supervisord, apply. The shell around plan.py."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from . import plan as planning
from . import triggers
from .files import read_text, write_atomic, write_if_changed
from .fleet import SERVER_PROGRAM, Fleet, FleetError, Problem
from .layout import MARKER, Layout
from .operations import (
    Env,
    Operation,
    Remove,
    Replace,
    RunResult,
    SafeRestart,
    SafeStop,
    take_snapshot,
)
from .operations import run as run_operations
from .plan import Observed, Plan
from .procinfo import process_start_time
from .render import Rendering
from .supervisor import Supervisor, SupervisorError, SupervisorTarget, start_private, target_for

SETTLED_STATES = {"RUNNING", "FATAL", "EXITED", "STOPPED"}
# /proc/uptime and start ticks are precise to 10 ms; mtimes to the nanosecond
CLOCK_SLACK = 0.05


def stable_python() -> str:
    """The interpreter for rendered programs, named the same however tf-fleet was started
    (`tf-fleet`'s shebang says python3, `.venv/bin/python -m multiagent` says python):
    a different spelling would change every program entry and replace every agent.
    Symlinks are kept: resolving them would leave the virtualenv."""
    for name in ("python3", "python"):
        candidate = Path(sys.prefix) / "bin" / name
        if candidate.exists():
            return str(candidate)
    return sys.executable


class Context:
    """A loaded fleet with everything derived from it that the commands share. Rendering
    is done on first use: `status` and `restart` do not need it (nor Jinja2's import)."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.target: SupervisorTarget = target_for(fleet)
        self.layout = Layout(fleet.state_dir)
        self.supervisor = Supervisor(self.target)

    @cached_property
    def rendering(self) -> Rendering:
        from .render import RenderContext, render

        ctx = RenderContext(
            python=stable_python(),
            program_dir=self.target.program_dir,
            program_suffix=self.target.program_suffix,
        )
        try:
            return render(self.fleet, ctx)
        except ValueError as exc:
            raise FleetError(
                [Problem(str(self.fleet.path), None, None, "(render)", str(exc))]
            ) from exc

    def env(self, restart_method: str | None = None) -> Env:
        return Env(
            self.supervisor,
            self.layout,
            restart_method or self.fleet.restart.method,
            self.fleet.restart.restart_dir,
            self.fleet.server.url,
        )

    def kind(self, name: str) -> str:
        """tf-agent, upstream or server; for a program no longer in the fleet, from its file."""
        if name in self.fleet.agents:
            return "tf-agent" if self.fleet.agents[name].is_tf_agent else "upstream"
        if name == SERVER_PROGRAM:
            return "server"
        text = read_text(self.target.program_dir / f"{name}{self.target.program_suffix}") or ""
        return "tf-agent" if "-m multiagent.agent" in text or "tf-agent" in text else "upstream"


@dataclass
class UpReport:
    plan: Plan
    written: list[Path] = field(default_factory=list)
    started_supervisord: int | None = None
    started: list[str] = field(default_factory=list)
    pending: list[planning.Action] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    applied: RunResult | None = None


def managed_programs(ctx: Context, loaded: dict[str, str]) -> set[str]:
    """Programs of this fleet: our marker in the file, or (private) anything supervisord has."""
    names: set[str] = set()
    marker = f"{MARKER} (state dir {ctx.fleet.state_dir})"
    directory = ctx.target.program_dir
    suffix = ctx.target.program_suffix
    if directory.is_dir():
        for path in directory.glob(f"*{suffix}"):
            try:
                with open(path) as handle:
                    first = handle.readline()
            except OSError:
                continue
            if marker in first:
                names.add(path.name[: -len(suffix)])
    if ctx.target.mode == "private":
        names |= set(loaded)
    else:
        names |= {n for n in loaded if n in ctx.rendering.programs}
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
        n for n in ctx.rendering.programs if triggers.read_drain(ctx.layout, n) == triggers.HOLD
    )
    return Observed(
        disk=disk,
        managed=frozenset(managed_programs(ctx, loaded)),
        loaded=loaded,
        started=started,
        modified=modified,
        held=held,
    )


def make_plan(ctx: Context) -> Plan:
    observed = observe(ctx)
    if ctx.supervisor.is_running():
        observed = replace(observed, pending_in_supervisor=pending_in_supervisor(ctx, observed))
    return planning.make_plan(ctx.rendering.programs, observed)


def _digest(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()


def pending_in_supervisor(ctx: Context, observed: Observed) -> frozenset[str]:
    """Programs whose file on disk is not what supervisord has loaded. reloadConfig tells
    (it compares without acting) but re-reads every program file, 0.3 s for 200; the record
    of what tf-fleet last loaded answers the same when it matches."""
    applied = read_applied(ctx)
    if applied is not None:
        loaded = [p for n, p in ctx.rendering.programs.items() if n in observed.loaded]
        if all(applied.get(p.name) == _digest(observed.disk.get(p.program_path)) for p in loaded):
            return frozenset()
    return frozenset(ctx.supervisor.reload_config()[1])


def _applied_file(ctx: Context) -> Path:
    return ctx.layout.supervisor_dir / "applied.json"


def read_applied(ctx: Context) -> dict[str, str] | None:
    """{program: digest of the text supervisord loaded}, if written for this supervisord."""
    try:
        data = json.loads(_applied_file(ctx).read_text())
        if data.get("supervisord_pid") == ctx.supervisor.pid():
            return dict(data["programs"])
    except (OSError, ValueError, KeyError, TypeError, SupervisorError):
        pass
    return None


def write_applied(ctx: Context, plan: Plan, applied: RunResult | None) -> None:
    unsettled = {op.name for op in (applied.operations if applied else []) if op.stage != "done"}
    unsettled |= {a.name for a in plan.of_kind(planning.REMOVE)}
    loaded = ctx.supervisor.processes()
    programs = {
        name: _digest(program.program_text)
        for name, program in ctx.rendering.programs.items()
        if name in loaded and name not in unsettled
    }
    record = {"supervisord_pid": ctx.supervisor.pid(), "programs": programs}
    write_atomic(_applied_file(ctx), json.dumps(record, indent=1, sort_keys=True) + "\n")


def check_host(ctx: Context) -> None:
    """Facts of this host that a fleet file can get wrong; reported like validation errors."""
    problems = []
    for name, agent in ctx.fleet.agents.items():
        if agent.user:
            try:
                pwd.getpwnam(agent.user)
            except KeyError:
                problems.append(
                    Problem(
                        str(ctx.fleet.path),
                        None,
                        name,
                        "user",
                        f"no such user {agent.user!r} on this host",
                    )
                )
            if agent.user and os.geteuid() != 0 and ctx.target.mode == "private":
                problems.append(
                    Problem(
                        str(ctx.fleet.path),
                        None,
                        name,
                        "user",
                        "running agents as another user needs tf-fleet (and"
                        " so its supervisord) to run as root",
                    )
                )
    if problems:
        raise FleetError(problems)


def prepare_dirs(ctx: Context) -> None:
    layout = ctx.layout
    for directory in (
        layout.state_dir,
        layout.run_dir,
        layout.logs_dir,
        ctx.target.program_dir,
        Path(ctx.fleet.restart.restart_dir),
    ):
        directory.mkdir(parents=True, exist_ok=True)
    if ctx.fleet.server.embedded:
        layout.server_db.parent.mkdir(parents=True, exist_ok=True)
    owned = [a for a in ctx.fleet.agents.values() if a.user]
    for agent in ctx.fleet.agents.values():
        layout.agent_dir(agent.name).mkdir(parents=True, exist_ok=True)
    if owned:
        # Agents of several users share the run dir: sticky, like /tmp.
        os.chmod(layout.run_dir, 0o1777)
        for agent in owned:
            entry = pwd.getpwnam(agent.user or "")
            os.chown(layout.agent_dir(agent.name), entry.pw_uid, entry.pw_gid)


def ensure_supervisord(ctx: Context) -> int | None:
    """Start the private supervisord if it is not running; returns its pid if started."""
    if ctx.supervisor.is_running():
        return None
    if ctx.target.mode == "system":
        raise SupervisorError(
            f"the system supervisord ({ctx.target.config}) is not answering on"
            f" {ctx.target.socket_url}; start it (e.g. `systemctl start supervisor`)"
        )
    return start_private(ctx.layout)


def write_files(ctx: Context, plan: Plan) -> list[Path]:
    """Write what changed; files of agents being removed stay until they are gone."""
    written = []
    rendering = ctx.rendering
    if rendering.supervisord_conf:
        path, text = rendering.supervisord_conf
        if write_if_changed(path, text):
            written.append(path)
    for program in rendering.programs.values():
        for path, text in program.files.items():
            if write_if_changed(path, text):
                written.append(path)
    return written


def wait_settled(
    supervisor: Supervisor,
    names: list[str],
    timeout: float,
    tick: Callable[[dict[str, str]], None] | None = None,
) -> dict[str, str]:
    """Wait until each program is past STARTING/BACKOFF (running, or failed for good)."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while True:
        infos = supervisor.processes()
        states = {n: infos[n].state if n in infos else "UNKNOWN" for n in names}
        if tick:
            tick(states)
        if all(s in SETTLED_STATES for s in states.values()) or time.monotonic() > deadline:
            return states
        # each look costs supervisord a pass over every process: fewer for large fleets
        time.sleep(0.1 if len(names) <= 20 else 0.5)


OPERATION_FOR = {planning.RESTART: SafeRestart, planning.REPLACE: Replace, planning.REMOVE: Remove}


def up(
    ctx: Context,
    wait: bool = True,
    timeout: float = 60.0,
    restart_timeout: float | None = None,
    progress: Callable[[list[Operation]], None] | None = None,
) -> UpReport:
    check_host(ctx)
    plan = make_plan(ctx)
    report = UpReport(plan)
    prepare_dirs(ctx)
    report.written = write_files(ctx, plan)
    report.started_supervisord = ensure_supervisord(ctx)
    supervisor = ctx.supervisor
    wrote_programs = any(p.parent == ctx.target.program_dir for p in report.written)
    added: list[str] = []
    if report.started_supervisord is None and (wrote_programs or plan.of_kind(planning.ADD)):
        added = supervisor.reload_config()[0]
    # The server first, so agents find it when they first poll.
    ordered = sorted(
        plan.of_kind(planning.ADD, planning.START), key=lambda a: (a.name != SERVER_PROGRAM, a.name)
    )
    for action in ordered:
        if action.kind == planning.ADD and action.name in added:
            supervisor.add(action.name)  # autostart=true starts it
        elif action.kind == planning.START or (
            action.kind == planning.ADD
            and report.started_supervisord is None
            and action.name not in added
        ):
            try:
                supervisor.start(action.name, False)
            except SupervisorError as exc:
                if "ALREADY_STARTED" not in str(exc):
                    raise
        report.started.append(action.name)
    report.pending = plan.of_kind(planning.RESTART, planning.REPLACE, planning.REMOVE)
    if report.pending:
        # Every changed agent at once: each waits for its own job, none for another's.
        operations = [OPERATION_FOR[a.kind](a.name, ctx.kind(a.name)) for a in report.pending]
        report.applied = run_operations(
            operations,
            ctx.env(),
            max_parallel=len(operations),
            timeout=restart_timeout or ctx.fleet.restart.timeout,
            stop_on_failure=False,
            wait=wait,
            progress=progress,
        )
    if wait and report.started:
        report.states = wait_settled(supervisor, report.started, timeout)
    if not plan.is_noop or read_applied(ctx) is None:
        write_applied(ctx, plan, report.applied)
    return report


class BusyError(Exception):
    def __init__(self, busy: dict[str, str]):
        super().__init__("; ".join(f"{n}: {t}" for n, t in busy.items()))
        self.busy = busy


def busy_agents(ctx: Context, names: list[str]) -> dict[str, str]:
    env = ctx.env()
    snap = take_snapshot(env, names)
    found = {}
    for name in names:
        is_busy, text = snap.busy(name, ctx.kind(name))
        if is_busy:
            found[name] = text
    return found


def down(
    ctx: Context,
    *,
    safe: bool = False,
    force: bool = False,
    timeout: float = 120.0,
    progress: Callable[[list[Operation]], None] | None = None,
) -> tuple[list[str], RunResult | None]:
    """Stop every agent (and the private supervisord). `safe` waits for running jobs;
    without it, running jobs make it refuse unless `force`."""
    supervisor = ctx.supervisor
    if not supervisor.is_running():
        return [], None
    processes = supervisor.processes()
    managed = managed_programs(ctx, {n: i.state for n, i in processes.items()})
    running = sorted(
        n for n in managed if n in processes and processes[n].state not in planning.DOWN_STATES
    )
    drained = None
    if safe:
        agents = [n for n in running if n != SERVER_PROGRAM]
        operations: list[Operation] = [SafeStop(n, ctx.kind(n)) for n in agents]
        drained = run_operations(
            operations,
            ctx.env(),
            max_parallel=max(1, len(operations)),
            timeout=timeout,
            stop_on_failure=False,
            progress=progress,
        )
        if not drained.ok:
            return running, drained
    elif not force:
        busy = busy_agents(ctx, [n for n in running if n != SERVER_PROGRAM])
        if busy:
            raise BusyError(busy)
    if ctx.target.mode == "private":
        pid = supervisor.pid()
        supervisor.shutdown()  # stops every program, waiting stopwaitsecs for each, then exits
        deadline = time.monotonic() + max(timeout, 30.0)
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            raise SupervisorError(f"supervisord (pid {pid}) did not exit within {timeout:.0f} s")
    else:
        # Agents first, the server last, so agents can report their state on the way out.
        for name in sorted(running, key=lambda n: n == SERVER_PROGRAM):
            supervisor.stop(name, True)
    if safe:
        for name in running:
            triggers.clear_drain(ctx.layout, name)  # a later `up` starts them again
    return running, drained


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
