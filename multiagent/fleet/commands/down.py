"""`down`: stop every agent of the fleet (and the private supervisord), never mid-job
unless forced, and never report success while a process of the fleet still runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from multiagent.fleet.commands.control import Interruption, end_jobs, in_flight, refuse_if_busy
from multiagent.fleet.errors import BusyError, UserError
from multiagent.fleet.host import triggers
from multiagent.fleet.host.orphans import (
    alive,
    ask_to_leave,
    fleet_processes,
    from_first_running,
    kill,
    orphans,
    wait_gone,
)
from multiagent.fleet.host.statusfile import read_status
from multiagent.fleet.model.facts import ProcessState, judge
from multiagent.fleet.model.fleetfile import Fleet, ProgramKind
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.operations import Operation, RunResult, SafeStop
from multiagent.fleet.reconcile.observe import managed_programs
from multiagent.fleet.reconcile.scheduler import fleet_env, take_out
from multiagent.fleet.reconcile.scheduler import run as run_operations
from multiagent.fleet.supervisord.client import Faults, Supervisor, SupervisorError
from multiagent.fleet.supervisord.ownership import is_ours, program_kinds
from multiagent.vocabulary import Phase

FORCE_ADVICE = (
    "refusing to stop agents that run jobs: use --safe to wait for them, or --force to"
    " interrupt them"
)


class LeftRunning(UserError):
    pass


def down(
    fleet: Fleet,
    supervisor: Supervisor,
    *,
    safe: bool = False,
    force: bool = False,
    timeout: float = 120.0,
    progress: Callable[[Sequence[Operation]], None] | None = None,
) -> tuple[list[str], RunResult | None, list[Interruption]]:
    """Stop every agent (and the private supervisord). `safe` waits for running jobs;
    without it, running jobs make it refuse unless `force`. Returns the programs that
    were running, the safe stops' result (None without `safe`) and the jobs `force`
    interrupted."""
    layout = Layout(fleet.state_dir)
    target = supervisor.target
    supervisord_pid = supervisor.pid() if supervisor.is_running() else None
    running: list[str] = []
    loaded: list[str] = []  # every program of this fleet supervisord has, running or not
    pids: dict[str, int] = {}
    processes = None
    if supervisord_pid:
        processes = supervisor.processes()
        pids = {n: i.pid for n, i in processes.items() if i.pid}
        states = {n: i.state for n, i in processes.items()}
        managed = managed_programs(fleet.identity, target, states)
        loaded = sorted(n for n in managed if n in processes)
        running = [n for n in loaded if processes[n].state not in ProcessState.DOWN]
    strays = orphans(fleet, layout, supervisord_pid)
    stray_kinds = program_kinds(fleet, target, strays)
    drained = None
    interrupted: list[Interruption] = []
    if safe:
        drained = _stop_safely(fleet, supervisor, running, timeout, progress)
        ask_to_leave(layout, strays, stray_kinds)
        if not drained.ok:
            return running, drained, interrupted
        _expect_gone(wait_gone(strays, timeout))
    elif not force:
        # The answer just read: another getAllProcessInfo costs ~0.2 s with 500 agents.
        refuse_if_busy(fleet, supervisor, running, FORCE_ADVICE, processes)
        _refuse_busy_strays(layout, strays, stray_kinds)
        ask_to_leave(layout, strays, stray_kinds)
        _expect_gone(wait_gone(strays, 30.0))
    else:
        interrupted = in_flight(fleet, supervisor, running, processes) if supervisord_pid else []
        _expect_gone(kill(strays))
    ended: list[Interruption] = []

    def end_interrupted() -> None:  # while the server still runs: it may be the fleet's
        ended.extend(end_jobs(fleet, interrupted))

    if target.mode != "private":
        _take_out_of_shared(fleet, supervisor, loaded, end_interrupted)
    elif supervisord_pid:
        _stop_agents_at_once(fleet, supervisor, running, pids, timeout, end_interrupted)
        _shutdown_private(supervisor, supervisord_pid, timeout)
    for name in [*running, *strays]:
        triggers.clear_drain(layout, name)  # a later `up` starts them again
    _expect_gone(fleet_processes(fleet, layout))
    return sorted({*running, *strays}), drained, ended


def _take_out_of_shared(
    fleet: Fleet, supervisor: Supervisor, loaded: list[str], then: Callable[[], None]
) -> None:
    """In a shared supervisord: stop each program of this fleet, remove it and delete its
    file, so a reload or a reboot starts nothing of the fleet; others stay as they are.
    Agents first, then `then()`, the server last, so agents (and `then`) can report to
    it on the way out."""
    target = supervisor.target
    server = fleet.server_program
    for name in [n for n in loaded if n != server]:
        take_out(supervisor, name)
        target.program_file(name).unlink(missing_ok=True)
    then()
    if server in loaded:
        take_out(supervisor, server)
        target.program_file(server).unlink(missing_ok=True)
    if target.program_dir.is_dir():
        for path in target.program_dir.glob(f"*{target.program_suffix}"):
            if is_ours(fleet.identity, path):  # not loaded (a failed `up`): still ours
                path.unlink(missing_ok=True)


def _refuse_busy_strays(
    layout: Layout, strays: dict[str, list[int]], kinds: dict[str, str]
) -> None:
    """A stray is idle only if it is a tf-agent whose status file says so."""
    busy = {}
    now = time.time()
    for name, pids in strays.items():
        data = None
        if kinds[name] == ProgramKind.TF_AGENT and len(pids) == 1:
            data, _ = judge(read_status(layout.status_file(name)), pids[0], now)
        if data is None or data.get("job_id") or data.get("state") in Phase.ALL:
            busy[name] = (
                f"pid {', '.join(map(str, pids))} runs outside supervisord (its supervisord"
                " died) and is not known to be idle"
            )
    if busy:
        raise BusyError(busy, FORCE_ADVICE)


def _expect_gone(left: dict[str, list[int]]) -> None:
    if left:
        listed = "; ".join(f"{n} (pid {', '.join(map(str, p))})" for n, p in sorted(left.items()))
        raise LeftRunning(f"still running: {listed}; nothing else was left half-done")


def _stop_safely(
    fleet: Fleet,
    supervisor: Supervisor,
    running: list[str],
    timeout: float,
    progress: Callable[[Sequence[Operation]], None] | None,
) -> RunResult:
    agents = [n for n in running if n != fleet.server_program]
    kinds = program_kinds(fleet, supervisor.target, agents)
    operations = [SafeStop(n, kinds[n]) for n in agents]
    return run_operations(
        operations,
        fleet_env(fleet, supervisor),
        max_parallel=max(1, len(operations)),
        timeout=timeout,
        stop_on_failure=False,
        progress=progress,
    )


def _stop_agents_at_once(
    fleet: Fleet,
    supervisor: Supervisor,
    running: list[str],
    pids: dict[str, int],
    timeout: float,
    then: Callable[[], None],
) -> None:
    """supervisord's shutdown stops its programs one group per pass of its main loop (a
    pass waits up to 1 s when nothing happens), and each agent is a group of its own: N
    agents would stop one after another, about a second each. Asked here, every agent
    gets its stop (SIGTERM; supervisord still sends SIGKILL after stopwaitsecs) at once,
    then the server, last, so agents can report their state on the way out; shutdown
    then finds nothing left to stop. Whatever is not down by the deadline is left to
    shutdown, as before. The wait watches the agents' pids, not supervisord: asking it
    for 200 processes' states every 50 ms would take the CPU the agents need to exit.
    `then()` runs once the agents are down, before the server stops."""
    server = fleet.server_program
    agents = [n for n in running if n != server]
    refused = supervisor.stop_many(agents)
    for name, code in refused.items():
        if code not in _LEFT_TO_SHUTDOWN:
            raise SupervisorError(
                f"supervisord refused stopProcess({name}): fault {code}", code, name
            )
    waiting = [pids[n] for n in agents if n not in refused and n in pids]
    deadline = time.monotonic() + max(timeout, 30.0)
    while waiting and time.monotonic() < deadline:
        waiting = from_first_running(waiting)
        if waiting:
            time.sleep(0.05)
    then()
    if server in running and not waiting:
        _ask_to_stop(supervisor, [server], wait=True)


# Not running, gone, or it failed to stop: shutdown, which follows, still stops it.
_LEFT_TO_SHUTDOWN = (
    Faults.NOT_RUNNING,
    Faults.BAD_NAME,
    Faults.FAILED,
    Faults.ABNORMAL_TERMINATION,
)


def _ask_to_stop(supervisor: Supervisor, names: list[str], wait: bool = False) -> list[str]:
    asked = []
    for name in names:
        try:
            supervisor.stop(name, wait=wait)
        except SupervisorError as err:
            if err.code not in _LEFT_TO_SHUTDOWN:
                raise
            continue
        asked.append(name)
    return asked


def _shutdown_private(supervisor: Supervisor, pid: int, timeout: float) -> None:
    supervisor.shutdown()  # stops every program, waiting stopwaitsecs for each, then exits
    deadline = time.monotonic() + max(timeout, 30.0)
    while alive([pid]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive([pid]):
        raise SupervisorError(f"supervisord (pid {pid}) did not exit within {timeout:.0f} s")
