"""Direct commands on agents that wait for nothing: busy check, hard restart, resume, and
what a forced stop interrupts (each job named, and its end on the server)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from multiagent.fleet.errors import BusyError
from multiagent.fleet.host import triggers
from multiagent.fleet.model.facts import ProcessInfo, ProcessState
from multiagent.fleet.model.fleetfile import Fleet, ProgramKind
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.render import token_files
from multiagent.fleet.reconcile.scheduler import fleet_env, take_snapshot
from multiagent.fleet.serverclient import ServerClient, ServerError
from multiagent.fleet.serverinfo import server_agent
from multiagent.fleet.supervisord.client import Faults, Supervisor, SupervisorError
from multiagent.fleet.supervisord.ownership import program_kinds
from multiagent.vocabulary import AgentState, JobState


@dataclass(frozen=True)
class Interruption:
    """An agent a forced command stopped while it was busy, and its job's end."""

    name: str
    job_id: str | None  # None: busy, but no job is known (from its file or the server)
    doing: str  # what it was doing, as `busy` says it
    server_state: str | None = None  # the job's state on the server once it was stopped
    problem: str | None = None  # why its end could not be posted

    def line(self) -> str:
        said = f"interrupted {self.name}: {self.doing}"
        if self.job_id is None:
            return f"{said}; no job of it is known to the server"
        if self.problem:
            return f"{said}; job {self.job_id} could not be ended on the server: {self.problem}"
        return f"{said}; job {self.job_id} is {self.server_state} on the server"

    def to_json(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "job_id": self.job_id,
            "doing": self.doing,
            "server_state": self.server_state,
            "problem": self.problem,
        }


def in_flight(
    fleet: Fleet,
    supervisor: Supervisor,
    names: list[str],
    processes: dict[str, ProcessInfo] | None = None,
) -> list[Interruption]:
    """The busy agents among `names` and their jobs, before a forced stop."""
    agents = [n for n in names if n != fleet.server_program]
    if not agents:
        return []
    kinds = program_kinds(fleet, supervisor.target, agents)
    snap = take_snapshot(fleet_env(fleet, supervisor), kinds, processes)
    found = []
    for name in agents:
        is_busy, doing = snap.busy(name, kinds[name])
        if is_busy:
            job = (snap.status(name) or {}).get("job_id") or snap.facts(name).server_job
            if not job and fleet.server.url:
                job = server_agent(fleet.server.url, name).get("job_id")
            found.append(Interruption(name, job if isinstance(job, str) else None, doing))
    return found


def end_jobs(fleet: Fleet, interrupted: list[Interruption]) -> list[Interruption]:
    """After the forced stop: each interrupted job as the server has it, posted
    `cancelled` as its agent would where the agent could not post its end itself."""
    tokens = token_files(fleet)
    ended = []
    for one in interrupted:
        if one.job_id is None:
            ended.append(one)
            continue
        try:
            client = ServerClient.with_token_file(fleet.server.url, tokens.get(one.name))
            state = (client.result(one.job_id) or {}).get("job_state")
            if state not in JobState.FINAL:
                client.end_job(one.job_id, one.name, JobState.CANCELLED)
                state = (client.result(one.job_id) or {}).get("job_state")
            ended.append(replace(one, server_state=str(state)))
        except (ServerError, ValueError) as exc:
            ended.append(replace(one, problem=str(exc)))
    return ended


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
) -> tuple[dict[str, int], list[Interruption]]:
    """Stop and start each agent at once; refused for busy agents unless `force`.
    Returns {name: new pid} and the jobs it interrupted."""
    interrupted = in_flight(fleet, supervisor, names) if force else []
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
    return pids, end_jobs(fleet, interrupted)


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
