"""Canary roll-outs: a change reaches a few agents first, and the rest only once those pass
a health gate; a canary that fails it is rolled back to the files it had before.

The previous files of every agent a change touches are kept in `<state>/rollback/` (one
JSON file per agent, 0600) until the next change, so `tf-fleet rollback` can put them
back by hand too. Nothing here interrupts a job: canaries are changed, and rolled back,
by the same safe operations as any change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multiagent.fleet.errors import ExitStatus, UserError
from multiagent.fleet.host import pending
from multiagent.fleet.host.files import PRIVATE, owner_of, read_text, write_atomic
from multiagent.fleet.host.statusfile import read_status
from multiagent.fleet.model.facts import ProcessState
from multiagent.fleet.model.fleetfile import Fleet, ProgramKind
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.operations import Operation, Replace, RunResult, SafeRestart
from multiagent.fleet.model.render import Rendering
from multiagent.fleet.reconcile.scheduler import fleet_env, take_snapshot
from multiagent.fleet.serverclient import ServerClient
from multiagent.fleet.serverinfo import server_agent
from multiagent.fleet.supervisord.client import Supervisor, SupervisorTarget
from multiagent.fleet.supervisord.ownership import program_kind, program_kinds
from multiagent.vocabulary import AgentState, JobState

LOOK_EVERY = 0.2


@dataclass(frozen=True)
class CanaryGate:
    """How many agents go first, and what they must show before the rest follow."""

    count: int
    jobs: int = 0  # each canary finished this many jobs, all passing
    job_file: Path | None = None  # a smoke job each canary runs, which must pass
    timeout: float = 900.0
    # How long each canary stays under watch (no exit, no restart, polling on time);
    # None: the fleet file's `restart.canary_soak`.
    soak: float | None = None


class CanaryError(UserError):
    pass


def choose(fleet: Fleet, supervisor: Supervisor, names: list[str], count: int) -> list[str]:
    """The canaries among `names`: idle agents first (they change at once), then by name."""
    kinds = program_kinds(fleet, supervisor.target, names)
    snap = take_snapshot(fleet_env(fleet, supervisor), kinds)
    return sorted(names, key=lambda n: (snap.busy(n, kinds[n])[0], n))[:count]


# The previous files ------------------------------------------------------------------
def _store(layout: Layout) -> Path:
    return layout.state_dir / "rollback"


def save_previous(layout: Layout, rendering: Rendering, names: list[str]) -> None:
    """Keep what is on disk now for each agent's program and config files (those of
    `rendering`)."""
    store = _store(layout)
    for old in store.glob("*.json") if store.is_dir() else []:
        old.unlink()
    for name in names:
        files = rendering.programs[name].files
        saved = {str(path): read_text(path) for path in files}
        write_atomic(store / f"{name}.json", json.dumps(saved, indent=1), PRIVATE)


def saved(layout: Layout) -> list[str]:
    store = _store(layout)
    return sorted(p.stem for p in store.glob("*.json")) if store.is_dir() else []


def forget(layout: Layout, names: list[str]) -> None:
    for name in names:
        (_store(layout) / f"{name}.json").unlink(missing_ok=True)


def restore(fleet: Fleet, target: SupervisorTarget, names: list[str]) -> list[Operation]:
    """Put back each agent's previous files; returns the safe operations that make its
    process use them (a swap where the program entry changed, else a restart)."""
    operations: list[Operation] = []
    store = _store(Layout(fleet.state_dir))
    for name in names:
        path = store / f"{name}.json"
        try:
            files = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CanaryError(f"{name}: cannot read its previous files ({path}): {exc}") from exc
        program_file = target.program_file(name)
        swapped = read_text(program_file) != files.get(str(program_file))
        if not swapped:
            pending.drop(Layout(fleet.state_dir), name)  # a change not yet swapped in
        for file, text in files.items():
            if swapped and Path(file) == program_file and text is not None:
                pending.stage(Layout(fleet.state_dir), name, text)  # live at the swap
                continue
            _put_back(fleet, program_file, name, Path(file), text)
        kind = program_kind(fleet, target, name)
        method = fleet.restart.method
        operations.append(Replace(name, kind) if swapped else SafeRestart(name, kind, method))
        path.unlink()
    return operations


def _put_back(fleet: Fleet, program_file: Path, name: str, path: Path, text: str | None) -> None:
    if text is None:
        path.unlink(missing_ok=True)
        return
    agent = fleet.agents.get(name)
    is_program = path == program_file
    owner = owner_of(agent.user) if agent and not is_program else None
    write_atomic(path, text, PRIVATE, owner)


# The health gate -------------------------------------------------------------------
def check(
    fleet: Fleet,
    supervisor: Supervisor,
    canaries: list[str],
    gate: CanaryGate,
    say: Callable[[str], None] | None,
) -> str | None:
    """None when every canary passed the gate, else what failed, in words: each canary
    soaks (stays up on the process it came back on, polling on time) for the soak, and
    passes the job gates, if any."""
    start = time.monotonic()
    deadline = start + gate.timeout
    soak = fleet.restart.canary_soak if gate.soak is None else gate.soak
    infos = supervisor.processes()
    pids = {n: infos[n].pid if n in infos else 0 for n in canaries}
    kinds = program_kinds(fleet, supervisor.target, canaries)
    if say and soak:
        say(f"canaries {', '.join(canaries)}: soaking for {soak:g} s")
    if gate.job_file is not None:
        failure = _smoke_jobs(fleet, canaries, gate.job_file, deadline, say)
        if failure:
            return _soaked(fleet, supervisor, kinds, pids) or failure
    if gate.jobs:
        failure = _jobs_done(fleet, kinds, gate.jobs, deadline, say)
        if failure:
            return _soaked(fleet, supervisor, kinds, pids) or failure
    jobs = SoakJobs(fleet, kinds)
    while True:
        failure = _soaked(fleet, supervisor, kinds, pids) or jobs.look()
        if failure or time.monotonic() - start >= soak:
            return failure
        time.sleep(LOOK_EVERY)


# A phase's exit status that says its command could not run at all (the shell's "not
# executable" and "command not found"): the change's fault, whatever the job.
CANNOT_RUN = {126: "not executable", 127: "command not found"}


class SoakJobs:
    """The jobs a soaking tf-agent canary runs: one whose phase could not run its command
    (a typo in `test_command`, a connector not installed) fails the gate, though no smoke
    job was asked for."""

    def __init__(self, fleet: Fleet, kinds: dict[str, str]):
        self.layout = Layout(fleet.state_dir)
        self.client = _client(fleet.server.url)
        tf_agents = [n for n, k in kinds.items() if k == ProgramKind.TF_AGENT]
        self.running: dict[str, str | None] = dict.fromkeys(tf_agents)

    def look(self) -> str | None:
        for name, was in self.running.items():
            data = read_status(self.layout.status_file(name)).data or {}
            now = data.get("job_id") if isinstance(data.get("job_id"), str) else None
            self.running[name] = now or None
            if was and was != now:
                failure = self._ended(name, was)
                if failure:
                    return failure
        return None

    def _ended(self, name: str, job_id: str) -> str | None:
        result = _wait_final(self.client, job_id, time.monotonic() + 10) or {}
        for key, value in result.items():
            if key.endswith("_status") and isinstance(value, int) and value in CANNOT_RUN:
                phase = key[: -len("_status")]
                return (
                    f"{name}: job {job_id} failed in its {phase} phase with status {value}"
                    f" ({CANNOT_RUN[value]}) during the soak: a command of the change cannot run"
                )
        return None


# How much later than its polling interval an idle tf-agent may poll before the soak
# calls it stuck: a look at the server may take a while under load.
POLL_GRACE = 15.0


def _soaked(
    fleet: Fleet, supervisor: Supervisor, kinds: dict[str, str], pids: dict[str, int]
) -> str | None:
    """What a look finds wrong with a soaking canary: not running, a process other than
    the one it came back on (it exited and supervisord started it again), or an idle
    tf-agent that has not polled on time; None when every canary is fine."""
    infos = supervisor.processes()
    layout = Layout(fleet.state_dir)
    now = time.time()
    for name, kind in kinds.items():
        info = infos.get(name)
        if info is None or info.state not in ProcessState.LIVE:  # STARTING: startsecs
            state = info.state if info else "not loaded"
            exited = f", last exit status {info.exitstatus}" if info else ""
            return f"{name}: {state} during the soak{exited}"
        if info.pid != pids[name]:
            return (
                f"{name}: its process (pid {pids[name]}) exited during the soak (exit status"
                f" {info.exitstatus}) and was started again (pid {info.pid})"
            )
        if kind != ProgramKind.TF_AGENT:
            continue  # upstream's agent writes no status file: its exit is what shows
        data = read_status(layout.status_file(name)).data or {}
        last_poll = data.get("last_poll")
        interval = float(fleet.agents[name].upstream.get("polling_interval") or 10)
        waiting = data.get("state") == AgentState.WAITING and not data.get("job_id")
        if waiting and isinstance(last_poll, (int, float)):
            late = now - last_poll
            if late > interval + POLL_GRACE:
                return (
                    f"{name}: has not polled its server for {late:.0f} s during the soak"
                    f" (polling_interval {interval:g} s)"
                )
    return None


def _client(server_url: str) -> ServerClient:
    return ServerClient(server_url)


def _smoke_jobs(
    fleet: Fleet,
    canaries: list[str],
    job_file: Path,
    deadline: float,
    say: Callable[[str], None] | None,
) -> str | None:
    """Submit the smoke job to each canary's queue (other agents of this fleet on that
    queue excluded) and wait for all; the first failure, if any."""
    import yaml

    from multiagent.fleet.commands.submit import exit_code, pack_attachments

    try:
        job = yaml.safe_load(job_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CanaryError(f"--canary-job {job_file}: {exc}") from exc
    if not isinstance(job, dict):
        raise CanaryError(f"--canary-job {job_file}: expected a job mapping")
    client = _client(fleet.server.url)
    submitted = {}
    for name in canaries:
        queue = fleet.agents[name].upstream["job_queues"][0]
        others = [
            other
            for other, agent in fleet.agents.items()
            if other != name and queue in agent.upstream["job_queues"]
        ]
        body, archive = pack_attachments({**job, "job_queue": queue}, job_file.parent)
        if others:
            body["exclude_agents"] = others
        submitted[name] = client.submit(body, archive)
        if say:
            say(f"{name}: canary job {submitted[name]} submitted to {queue}")
    for name, job_id in submitted.items():
        result = _wait_final(client, job_id, deadline)
        if result is None:
            return f"{name}: canary job {job_id} did not finish in time"
        if exit_code(result) != ExitStatus.OK:
            return f"{name}: canary job {job_id} failed ({_outcome(result)})"
    return None


def _wait_final(client: ServerClient, job_id: str, deadline: float) -> dict[str, Any] | None:
    while time.monotonic() < deadline:
        result = client.result(job_id) or {}
        if result.get("job_state") in JobState.FINAL:
            return result
        time.sleep(LOOK_EVERY * 2)
    return None


def _outcome(result: dict[str, Any]) -> str:
    statuses = [
        f"{key[: -len('_status')]} {value}"
        for key, value in result.items()
        if key.endswith("_status") and value
    ]
    return f"{result.get('job_state')}; " + (", ".join(statuses) or "no phase failed")


def _current_job(fleet: Fleet, layout: Layout, name: str, kind: str) -> str | None:
    if kind == ProgramKind.TF_AGENT:
        data = read_status(layout.status_file(name)).data or {}
    else:
        data = server_agent(fleet.server.url, name)
    job = data.get("job_id")
    return job if isinstance(job, str) and job else None


def _jobs_done(
    fleet: Fleet,
    canaries: dict[str, str],
    wanted: int,
    deadline: float,
    say: Callable[[str], None] | None,
) -> str | None:
    """Watch each canary ({name: kind}) until it has finished `wanted` jobs since its
    change, each passing; the first failure, or who fell short at the deadline."""
    from multiagent.fleet.commands.submit import exit_code

    client = _client(fleet.server.url)
    layout = Layout(fleet.state_dir)
    running: dict[str, str | None] = {n: None for n in canaries}
    passed: dict[str, set[str]] = {n: set() for n in canaries}
    while time.monotonic() < deadline:
        for name, kind in canaries.items():
            job = _current_job(fleet, layout, name, kind)
            ended = running[name]
            if ended and ended != job:
                result = _wait_final(client, ended, deadline) or {}
                if exit_code(result) != ExitStatus.OK:
                    return f"{name}: job {ended} failed on the canary ({_outcome(result)})"
                passed[name].add(ended)
                if say:
                    say(f"{name}: canary job {ended} passed ({len(passed[name])}/{wanted})")
            running[name] = job
        if all(len(done) >= wanted for done in passed.values()):
            return None
        time.sleep(LOOK_EVERY)
    short = [f"{n} ({len(d)}/{wanted})" for n, d in passed.items() if len(d) < wanted]
    return f"canaries did not finish {wanted} passing job(s) in time: {', '.join(short)}"


def restart_in_two(
    fleet: Fleet,
    supervisor: Supervisor,
    names: list[str],
    method: str,
    gate: CanaryGate,
    run: Callable[[list[Operation]], RunResult],
    say: Callable[[str], None] | None,
) -> tuple[RunResult, str | None, list[str]]:
    """A safe restart of `names`, the canaries first: the rest only once the canaries are
    back and passed the gate. Returns every operation's result, what failed the gate
    (nothing to roll back: a restart changes no file), and who was left untouched."""
    kinds = program_kinds(fleet, supervisor.target, names)
    canaries = choose(fleet, supervisor, names, gate.count)
    first = run([SafeRestart(n, kinds[n], method) for n in canaries])
    failure = "; ".join(f"{op.name}: {op.text}" for op in first.operations if not op.succeeded)
    failure = failure or check(fleet, supervisor, canaries, gate, say) or ""
    rest = [n for n in names if n not in canaries]
    if failure:
        return first, failure, rest
    if not rest:
        return first, None, []
    second = run([SafeRestart(n, kinds[n], method) for n in rest])
    both = RunResult(
        [*first.operations, *second.operations],
        timed_out=second.timed_out,
        stopped_early=second.stopped_early,
    )
    return both, None, []
