"""Direct commands on agents that wait for nothing: busy check, hard restart, resume."""

from __future__ import annotations

from multiagent.fleet.errors import BusyError
from multiagent.fleet.host import triggers
from multiagent.fleet.model.facts import ProcessInfo, ProcessState
from multiagent.fleet.model.fleetfile import Fleet, ProgramKind
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.render import token_files
from multiagent.fleet.reconcile.scheduler import fleet_env, take_snapshot
from multiagent.fleet.supervisord.client import Faults, Supervisor, SupervisorError
from multiagent.fleet.supervisord.ownership import program_kinds
from multiagent.vocabulary import AgentState


def busy_agents(
    fleet: Fleet,
    supervisor: Supervisor,
    names: list[str],
    processes: dict[str, ProcessInfo] | None = None,
) -> dict[str, str]:
    """{name: what it is doing} for each of `names` that runs a job now (`processes`:
    supervisord's answer, when the caller has just asked it)."""
    if not names:
        return {}
    kinds = program_kinds(fleet, supervisor.target, names)
    snap = take_snapshot(fleet_env(fleet, supervisor), kinds, processes)
    found = {}
    for name in names:
        is_busy, text = snap.busy(name, kinds[name])
        if is_busy:
            found[name] = text
    return found


def refuse_if_busy(
    fleet: Fleet,
    supervisor: Supervisor,
    names: list[str],
    advice: str,
    processes: dict[str, ProcessInfo] | None = None,
) -> None:
    agents = [n for n in names if n != fleet.server_program]
    busy = busy_agents(fleet, supervisor, agents, processes)
    if busy:
        raise BusyError(busy, advice)


def hard_restart(
    fleet: Fleet, supervisor: Supervisor, names: list[str], force: bool
) -> dict[str, int]:
    """Stop and start each agent at once; refused for busy agents unless `force`.
    Returns {name: new pid}."""
    if not force:
        refuse_if_busy(
            fleet,
            supervisor,
            names,
            "use --safe to restart when idle, or --force to interrupt the job",
        )
    pids = {}
    for name in names:
        if supervisor.process(name).state in (*ProcessState.LIVE, ProcessState.BACKOFF):
            try:
                supervisor.stop(name, True)
            except SupervisorError as exc:
                if exc.code != Faults.NOT_RUNNING:
                    raise
        supervisor.start(name, True)
        pids[name] = supervisor.process(name).pid
    return pids


def resume(fleet: Fleet, supervisor: Supervisor, names: list[str]) -> dict[str, bool]:
    """Take jobs again after a drain; start agents a hold left down.
    Returns {name: whether it was started}."""
    started = {}
    layout = Layout(fleet.state_dir)
    tokens = token_files(fleet)
    kinds = program_kinds(fleet, supervisor.target, names)
    for name in names:
        triggers.clear_drain(layout, name)
        if kinds[name] == ProgramKind.UPSTREAM:
            triggers.set_server_state(
                fleet.server.url, name, AgentState.WAITING, "", tokens.get(name)
            )
        down = supervisor.process(name).state in ProcessState.DOWN
        if down:
            supervisor.start(name, False)
        started[name] = down
    return started
