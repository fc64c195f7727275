"""The shell around operations.py: gather the facts, carry out the actions, loop.

Each tick reads the processes in one XML-RPC call (only the agents in flight when they
are few, else every process), plus the status files of the agents in flight (and, for
upstream agents, their children and what the server says), and moves each operation on
by at most one step.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from multiagent.fleet.errors import ExitStatus, UserError
from multiagent.fleet.host import pending, triggers
from multiagent.fleet.host.logs import tail_lines
from multiagent.fleet.host.procinfo import child_count, process_start_time
from multiagent.fleet.host.statelock import Superseded, superseded_by
from multiagent.fleet.host.statusfile import read_status
from multiagent.fleet.model.facts import ProcessInfo, ProcessState, judge
from multiagent.fleet.model.fleetfile import Fleet, ProgramKind
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.operations import (
    ASK_FILE,
    ASK_SIGNAL,
    KEEP_DRAIN,
    REMOVE_PROGRAM,
    SERVER_STATE,
    SET_DRAIN,
    START,
    STOP,
    SWAP_PROGRAM,
    TELL_REMOVED,
    Action,
    AgentFacts,
    Operation,
    RunResult,
    Snapshot,
)
from multiagent.fleet.model.render import token_files
from multiagent.fleet.serverinfo import agent_job
from multiagent.fleet.supervisord.client import Faults, Supervisor, SupervisorError
from multiagent.vocabulary import (
    DEFAULT_RESTART_DIR,
    REMOVED_COMMENT,
    REMOVED_STATE,
    DrainMode,
    Phase,
    clean_reason,
    drained_comment,
)

SERVER_CACHE_SECONDS = 2.0
# Up to this many agents in an operation, a look asks supervisord for those agents only
# (and often: every FEW_TICK s); beyond it, for every process in one call.
FEW = 10
FEW_TICK = 0.02
# Just after a few agents were asked, looks come faster: an idle tf-agent exits within
# ~10 ms of its signal, and the sooner it is seen gone the sooner it runs again.
ASKED_TICK = 0.005
ASKED_SECONDS = 0.25
REMOVE_TRIES = 20


@dataclass
class ServerJobs:
    """The job a server holds for an agent, asked at most every 2 s per agent."""

    url: str | None
    token_files: dict[str, str] = field(default_factory=dict)
    cache: dict[str, tuple[float, str | None, str | None]] = field(default_factory=dict)

    def job_of(self, name: str) -> tuple[str | None, str | None]:
        """(the job, None), or (None, why the server could not say)."""
        if not self.url:
            return None, "the fleet has no server to ask"
        now = time.monotonic()
        cached = self.cache.get(name)
        if cached and now - cached[0] < SERVER_CACHE_SECONDS:
            return cached[1], cached[2]
        job_id, why = agent_job(self.url, name, self.token_files.get(name))
        self.cache[name] = (now, job_id, why)
        return job_id, why


@dataclass
class Env:
    """What operations act on: supervisord, the state dir and the fleet's settings."""

    supervisor: Supervisor
    layout: Layout
    restart_dir: str = DEFAULT_RESTART_DIR
    server_url: str | None = None
    token_files: dict[str, str] = field(default_factory=dict)  # agent -> its credential
    server_jobs: ServerJobs = field(init=False)

    def __post_init__(self) -> None:
        self.server_jobs = ServerJobs(self.server_url, self.token_files)


def fleet_env(fleet: Fleet, supervisor: Supervisor) -> Env:
    """The Env of a fleet's agents under `supervisor`."""
    return Env(
        supervisor,
        Layout(fleet.state_dir),
        fleet.restart.restart_dir,
        fleet.server.url,
        token_files(fleet),
    )


def _facts(env: Env, name: str, kind: str, info: ProcessInfo | None) -> AgentFacts:
    if info is None:
        return AgentFacts()
    live = info.state in ProcessState.LIVE and info.pid
    status_file = (
        read_status(env.layout.status_file(name)) if kind == ProgramKind.TF_AGENT else None
    )
    started = process_start_time(info.pid) if live else None
    children = 0
    server_job = server_unknown = None
    # What the process does, where no status file can say: upstream agents write none,
    # and a tf-agent's may be missing, stale or another process's.
    said = judge(status_file, info.pid, time.time())[0] if kind == ProgramKind.TF_AGENT else None
    unproven = kind == ProgramKind.TF_AGENT and said is None
    if live and (kind == ProgramKind.UPSTREAM or unproven):
        children = child_count(info.pid)
        if not children:
            server_job, server_unknown = env.server_jobs.job_of(name)
    elif live and said is not None and not (said.get("job_id") or said.get("state") in Phase.ALL):
        # Idle, says the file: no phase may still run below it.
        children = child_count(info.pid)
    log_tail: tuple[str, ...] = ()
    if info.state in ProcessState.FAILED or info.state in ProcessState.DOWN:
        log_tail = tuple(tail_lines(env.layout.log_file(name), 3))
    return AgentFacts(info, status_file, started, children, server_job, log_tail, server_unknown)


def take_snapshot(
    env: Env, kinds: dict[str, str], processes: dict[str, ProcessInfo] | None = None
) -> Snapshot:
    """Every fact the operations on `kinds` ({name: kind}) decide from; `processes` is
    supervisord's answer when the caller has just asked it."""
    if processes is None:
        names = list(kinds)
        few = len(names) <= FEW
        processes = env.supervisor.processes_named(names) if few else env.supervisor.processes()
    agents = {name: _facts(env, name, kind, processes.get(name)) for name, kind in kinds.items()}
    return Snapshot(agents, time.time(), server_known=bool(env.server_url))


def execute(action: Action, env: Env) -> list[str]:
    """Carry out one action; returns notes for the report."""
    supervisor, name = env.supervisor, action.name
    if action.verb == START:
        _tolerating(Faults.ALREADY_STARTED, supervisor.start, name, False)
    elif action.verb == STOP:
        _tolerating((Faults.NOT_RUNNING, Faults.BAD_NAME), supervisor.stop, name, True)
    elif action.verb == ASK_SIGNAL:
        triggers.ask_restart_by_signal(supervisor, name)
    elif action.verb == ASK_FILE:
        triggers.ask_restart_by_file(env.restart_dir, name)
    elif action.verb in (SET_DRAIN, SERVER_STATE):
        _drain(action, env)
    elif action.verb == SWAP_PROGRAM:
        _swap_program(env, name, keep_drain=action.arg == KEEP_DRAIN)
    elif action.verb == REMOVE_PROGRAM:
        return _remove_program(env, name)
    elif action.verb == TELL_REMOVED:
        return _tell_removed(env, name)
    else:
        raise ValueError(f"unknown action {action.verb!r}")
    return []


def _drain(action: Action, env: Env) -> None:
    """The drain flag (tf-agent), or the agent's state on its server (upstream)."""
    if action.verb == SET_DRAIN:
        triggers.set_drain(env.layout, action.name, action.arg, action.reason)
        return
    triggers.set_server_state(
        env.server_url or "",
        action.name,
        action.arg,
        drained_comment(clean_reason(action.reason)),
        env.token_files.get(action.name),
    )


def _tell_removed(env: Env, name: str) -> list[str]:
    try:
        triggers.set_server_state(
            env.server_url or "", name, REMOVED_STATE, REMOVED_COMMENT, env.token_files.get(name)
        )
    except UserError as exc:  # the removal is done; only the server's view lags
        return [f"the server still lists it as it was: {exc}"]
    return []


def _tolerating(codes: int | tuple[int, ...], call: Callable[..., None], *args: object) -> None:
    try:
        call(*args)
    except SupervisorError as exc:
        if exc.code not in (codes if isinstance(codes, tuple) else (codes,)):
            raise


def take_out(supervisor: Supervisor, name: str) -> None:
    """Stop the program and remove it from supervisord. A process that exited with a
    restart status may be respawned by supervisord between our look and our call: stop
    it again until the removal holds."""
    gone = (Faults.NOT_RUNNING, Faults.BAD_NAME)
    for _ in range(REMOVE_TRIES):
        _tolerating(gone, supervisor.stop, name, True)
        try:
            _tolerating(Faults.BAD_NAME, supervisor.remove, name)
            return
        except SupervisorError as exc:
            if exc.code != Faults.STILL_RUNNING:
                raise
    raise SupervisorError(f"{name}: supervisord keeps starting it again; not removed")


def _swap_program(env: Env, name: str, keep_drain: bool = False) -> None:
    """The agent is idle and gone: its staged entry goes live, then the program is swapped.
    Someone's `supervisorctl update` in between does the same swap (a process it starts
    then still sees the hold and exits before polling, until the flag is cleared).
    `keep_drain`: a drain flag stays (an upstream agent's gate holds a drained agent)."""
    pending.install(env.layout, env.supervisor.target, name)
    take_out(env.supervisor, name)
    if not (keep_drain and triggers.read_drain(env.layout, name) == DrainMode.DRAIN):
        triggers.clear_drain(env.layout, name)  # before the new process could read it
    added, _, _ = env.supervisor.reload_config()
    if name in added:
        env.supervisor.add(name)  # autostart=true starts it
    elif name not in env.supervisor.processes_named([name]):
        raise SupervisorError(f"{name}: supervisord did not see its new program")


def _remove_program(env: Env, name: str) -> list[str]:
    take_out(env.supervisor, name)
    env.supervisor.target.program_file(name).unlink(missing_ok=True)
    pending.drop(env.layout, name)
    env.supervisor.reload_config()
    for path in (env.layout.status_file(name), env.layout.drain_file(name)):
        path.unlink(missing_ok=True)
    agent_dir = env.layout.agent_dir(name)
    results = agent_dir / "results"
    if results.is_dir() and any(results.iterdir()):
        # Undelivered outcomes are somebody's test results: never delete them.
        for child in agent_dir.iterdir():
            if child != results:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        return [f"kept {results}: it holds undelivered results"]
    shutil.rmtree(agent_dir, ignore_errors=True)
    return []


def _carry_out(op: Operation, actions: list[Action], env: Env) -> None:
    try:
        for action in actions:
            op.notes += execute(action, env)
    except (UserError, OSError) as exc:
        op.fail(str(exc))


def run(
    operations: Sequence[Operation],
    env: Env,
    *,
    max_parallel: int,
    timeout: float,
    stop_on_failure: bool,
    wait: bool = True,
    tick: float | None = None,
    progress: Callable[[Sequence[Operation]], None] | None = None,
) -> RunResult:
    """Advance the operations until all are done, one fails (if stop_on_failure) or time
    runs out. Idle agents go first, so a busy one never holds up the idle ones."""
    if not operations:
        return RunResult([])
    # A look costs supervisord work for each agent asked about (or for all of them): look
    # often while an agent is about to exit or come back, seldom while every one in
    # flight waits for a job.
    fast = tick if tick is not None else _look_every(len(operations))
    try:
        return _loop(operations, env, max_parallel, timeout, stop_on_failure, wait, fast, progress)
    except KeyboardInterrupt:
        raise Interrupted(operations) from None


def _look_every(count: int) -> float:
    if count <= FEW:
        return FEW_TICK
    return 0.05 if count <= 50 else 0.2


class Interrupted(UserError):
    """Ctrl-C while operations wait: nothing on the host was interrupted by it."""

    exit_status = ExitStatus.INTERRUPTED

    def __init__(self, operations: Sequence[Operation]):
        super().__init__("interrupted")
        self.pending = [op for op in operations if not op.done]

    def lines(self) -> list[str]:
        lines = ["interrupted: tf-fleet stopped waiting; no job was interrupted."]
        for op in self.pending:
            asked = "" if op.queued else " (already asked: it goes on by itself)"
            lines.append(f"  still pending: {op.name}: {op.text}{asked}")
        return lines


def _loop(
    operations: Sequence[Operation],
    env: Env,
    max_parallel: int,
    timeout: float,
    stop_on_failure: bool,
    wait: bool,
    fast: float,
    progress: Callable[[Sequence[Operation]], None] | None,
) -> RunResult:
    queue = list(operations)
    active: list[Operation] = []
    result = RunResult(list(operations))
    deadline = time.monotonic() + timeout
    kinds = {op.name: op.kind for op in operations}
    asked_at = 0.0
    while True:
        by = superseded_by(env.layout)
        if by:
            raise Superseded(by, [f"{op.name}: {op.text}" for op in operations if not op.done])
        snap = take_snapshot(env, kinds)
        _step_active(active, snap, env)
        if any(op.failed for op in operations) and stop_on_failure:
            result.stopped_early = bool(queue)
            queue.clear()
        if queue and len(active) < max_parallel:
            _begin_next(queue, active, snap, env, max_parallel, stop_on_failure)
            asked_at = time.monotonic()
            continue  # step the new ones on the next tick's fresh snapshot
        if progress:
            progress(operations)
        if not active and not queue:
            return result
        if not wait and not queue:
            return result  # asked everyone; the rest happens without us
        if time.monotonic() > deadline:
            result.timed_out = True
            return result
        time.sleep(_pause(active, fast, asked_at))


def _pause(active: list[Operation], fast: float, asked_at: float) -> float:
    """Seconds until the next look: seldom while every agent in flight runs a job."""
    if active and all(op.on_job for op in active):
        return 0.5
    if fast <= FEW_TICK and time.monotonic() - asked_at < ASKED_SECONDS:
        return min(fast, ASKED_TICK)
    return fast


def _step_active(active: list[Operation], snap: Snapshot, env: Env) -> None:
    for op in list(active):
        _carry_out(op, op.step(snap), env)
        if op.done:
            active.remove(op)


def _begin_next(
    queue: list[Operation],
    active: list[Operation],
    snap: Snapshot,
    env: Env,
    max_parallel: int,
    stop_on_failure: bool,
) -> None:
    queue.sort(key=lambda op: snap.busy(op.name, op.kind)[0])  # stable: idle first
    while queue and len(active) < max_parallel:
        op = queue.pop(0)
        _carry_out(op, op.begin(snap), env)
        if op.failed:
            if stop_on_failure:
                return
            continue
        active.append(op)
