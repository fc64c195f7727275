"""`up`: check, plan, write, ensure supervisord, start new agents, apply changes safely."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from multiagent.fleet.errors import RejectedChangeError
from multiagent.fleet.host import pending, rejected, triggers
from multiagent.fleet.host.applied import read_applied, write_applied
from multiagent.fleet.host.files import (
    PRIVATE,
    PRIVATE_DIR,
    PUBLIC,
    PUBLIC_DIR,
    Write,
    make_dir,
    owner_of,
    write_all_if_changed,
)
from multiagent.fleet.host.hostcheck import check_before_writing, check_host
from multiagent.fleet.host.orphans import alive, ask_to_leave, orphans
from multiagent.fleet.host.rendered import remember, render_or_reuse, rendering_digest
from multiagent.fleet.messages import PROGRESS_SECONDS, Lines
from multiagent.fleet.model import plan as planning
from multiagent.fleet.model.facts import ProcessState
from multiagent.fleet.model.fleetfile import Fleet, FleetError, Problem
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.plan import Plan
from multiagent.fleet.model.render import Program, Rendering
from multiagent.fleet.reconcile.observe import look, make_plan
from multiagent.fleet.supervisord.client import (
    Faults,
    Supervisor,
    SupervisorError,
    SupervisorTarget,
    start_private,
)
from multiagent.fleet.supervisord.ownership import program_kind, program_kinds
from multiagent.vocabulary import DrainMode

# Canaries, the safe operations and their scheduler are imported where a change needs
# them: a no-change `up` starts faster without them.
if TYPE_CHECKING:
    from multiagent.fleet.commands.canary import CanaryGate
    from multiagent.fleet.model.operations import Operation, RunResult


@dataclass
class UpReport:
    plan: Plan
    written: list[Path] = field(default_factory=list)
    started_supervisord: int | None = None
    started: list[str] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    applied: RunResult | None = None
    # Processes a dead supervisord left running: {name: pids}, asked to leave once idle;
    # those gone by the end were started under this supervisord (`started`).
    strays: dict[str, list[int]] = field(default_factory=dict)
    strays_left: dict[str, list[int]] = field(default_factory=dict)
    canaries: list[str] = field(default_factory=list)
    canary_failure: str | None = None  # what failed the gate; the canaries were rolled back
    rolled_back: RunResult | None = None
    rest: RunResult | None = None  # the agents changed after the canaries passed
    # Agents another host may run (commands/duplicates.py), in words: warned of.
    duplicates: list[str] = field(default_factory=list)

    @property
    def failed_to_start(self) -> list[str]:
        return [
            n
            for n in self.started
            if self.states.get(n) in (ProcessState.FATAL, ProcessState.BACKOFF, ProcessState.EXITED)
        ]


def prepare_dirs(fleet: Fleet, layout: Layout, target: SupervisorTarget) -> None:
    """Every directory tf-fleet writes in, with its mode and owner whatever the umask:
    nothing group- or world-writable. The run dir is ours (0755) and holds one 0700 dir
    per agent owned by the agent's user, as is the agent's own dir (its config, results
    and job dirs); logs and the server's database are private to us."""
    for directory, mode in (
        (layout.state_dir, PUBLIC_DIR),
        (layout.run_dir, PUBLIC_DIR),  # 1777 before run dirs were per agent
        (layout.logs_dir, PRIVATE_DIR),
        (layout.agents_dir, PUBLIC_DIR),
    ):
        make_dir(directory, mode)
    if not target.program_dir.is_dir():
        make_dir(target.program_dir)
    if not Path(fleet.restart.restart_dir).is_dir():
        make_dir(Path(fleet.restart.restart_dir))
    if fleet.server.embedded:
        make_dir(layout.server_db.parent, PRIVATE_DIR)
    for agent in fleet.agents.values():
        owner = owner_of(agent.user)
        make_dir(layout.agent_dir(agent.name), PRIVATE_DIR, owner)
        if agent.is_tf_agent:
            make_dir(layout.agent_run_dir(agent.name), PRIVATE_DIR, owner)


def _server_is_ours(fleet: Fleet, report: UpReport, loaded: dict[str, str]) -> bool:
    """This fleet's own server runs (under its supervisord, as `loaded` saw it, or left
    by a dead one)."""
    name = fleet.server_program
    if name in report.strays:
        return True
    return loaded.get(name) in (ProcessState.RUNNING, ProcessState.STARTING, ProcessState.STOPPING)


def mint_agent_tokens(fleet: Fleet, layout: Layout) -> None:
    """With `agent_tokens: true`, each agent gets its own agent-role client on the embedded
    server and its refresh token in its agent dir (0600; a valid one is kept)."""
    if not (fleet.server.embedded and fleet.server.agent_tokens):
        return
    from multiagent.server.credentials import AgentTokenError, ensure_agent_token

    for name, agent in sorted(fleet.agents.items()):
        if agent.token_file:
            continue
        path = layout.agent_token(name)
        try:
            ensure_agent_token(layout.server_db, name, path)
        except AgentTokenError as exc:
            problem = Problem(str(fleet.path), None, name, "server.agent_tokens", str(exc))
            raise FleetError([problem]) from exc
        owner = owner_of(agent.user)
        if owner:
            os.chown(path, *owner)


def ensure_supervisord(supervisor: Supervisor, layout: Layout) -> int | None:
    """Start the private supervisord if it is not running; returns its pid if started."""
    if supervisor.is_running():
        return None
    target = supervisor.target
    if target.mode == "system":
        raise SupervisorError(
            f"the system supervisord ({target.config}) is not answering on"
            f" {target.socket_url}; start it (e.g. `systemctl start supervisor`)",
            Faults.UNREACHABLE,
        )
    return start_private(layout)


def write_files(
    fleet: Fleet,
    rendering: Rendering,
    target: SupervisorTarget,
    hold_back: set[str] | frozenset[str] = frozenset(),
    leave: set[str] | frozenset[str] = frozenset(),
    staged: set[str] | frozenset[str] = frozenset(),
    texts_on_disk: bool = False,
) -> list[Path]:
    """Write what changed of `rendering`; files of agents being removed stay until they
    are gone. The program files of `hold_back` are left out (and taken away in private
    mode, where a supervisord about to start would start them); the files of `leave` are
    not written at all; the program entries of `staged` (loaded programs whose entry
    changed) go to the state dir, out of supervisord's reach until their swap. Program
    files (`environment:`) are 0600; an agent's config files (`device:`, commands) are
    0600 and its user's. `texts_on_disk`: `rendering` was read from the files just now."""
    layout = Layout(fleet.state_dir)
    writes: list[Write] = []
    if rendering.supervisord_conf:
        writes.append((*rendering.supervisord_conf, PUBLIC, None))
    written = []
    for name, program in rendering.programs.items():
        if name in leave:
            continue  # a change that waits for its canaries: the old files stay
        if name in staged or name in hold_back:
            written += _write_program(layout, target, program, name in staged)
        else:
            writes.append((program.program_path, program.program_text, PRIVATE, None))
        agent = fleet.agents.get(name)
        owner = owner_of(agent.user) if agent else None
        writes += [(path, text, PRIVATE, owner) for path, text in program.config_files.items()]
    return write_all_if_changed(writes, texts_on_disk) + written


def _write_program(
    layout: Layout, target: SupervisorTarget, program: Program, staged: bool
) -> list[Path]:
    """The program entry of a loaded program's change (staged) or of a stray's (left
    out); the path written, if any."""
    if staged:
        changed = pending.stage(layout, program.name, program.program_text)
        return [layout.pending_program(program.name)] if changed else []
    if target.mode == "private":
        program.program_path.unlink(missing_ok=True)
    return []


SOON = 0.02  # seconds: a look at a program due to be RUNNING, or just past it
FEW_LEFT = 20  # programs still starting that a look asks for by name


def wait_settled(
    supervisor: Supervisor,
    names: list[str],
    timeout: float,
    startsecs: Mapping[str, float] | None = None,
) -> dict[str, str]:
    """Wait until each program is past STARTING/BACKOFF (running, or failed for good).
    `startsecs`: each program's (default 1 s), which says when to look again."""
    deadline = time.monotonic() + timeout
    starting_since: dict[str, float] = {}
    states: dict[str, str] = {}
    pending = list(names)
    while True:
        # Once few are left, ask for those alone: supervisord sends 4 KB per pass of its
        # main loop, and every process's info is 0.3 s of passes at 500 programs.
        asked = time.monotonic()  # what the answer says was so then, however long it takes
        if states and len(pending) <= FEW_LEFT:
            infos = supervisor.processes_named(pending)
        else:
            infos = supervisor.processes()
        now = time.monotonic()
        states.update({n: infos[n].state if n in infos else ProcessState.UNKNOWN for n in pending})
        pending = [n for n in pending if states[n] not in ProcessState.SETTLED]
        if not pending or now > deadline:
            return states
        left = {n: states[n] for n in pending}
        time.sleep(next_look(left, starting_since, startsecs or {}, now, asked))


def next_look(
    states: Mapping[str, str],
    starting_since: dict[str, float],
    startsecs: Mapping[str, float],
    now: float,
    asked: float | None = None,
) -> float:
    """Seconds until the next look: when the first program seen STARTING is due to be
    RUNNING (its startsecs after it was first seen so), and soon after once it is due,
    since supervisord moves it on at its next pass, which the look itself wakes. Each
    look costs supervisord a pass over every process: for many programs, at most every
    0.5 s until one is due (supervisord reports start times in whole seconds only).
    `asked`: when the look that saw these states was asked (its answer may take a while)."""
    longest = 0.1 if len(states) <= FEW_LEFT else 0.5
    due = []
    for name, state in states.items():
        if state == ProcessState.STARTING:
            since = starting_since.setdefault(name, now if asked is None else asked)
            due.append(since + startsecs.get(name, 1.0) - now)
        else:
            starting_since.pop(name, None)
    if not due:
        return longest  # BACKOFF: supervisord's own back-off decides
    return min(longest, max(SOON, min(due) + SOON))


def await_server(fleet: Fleet, states: dict[str, str], timeout: float) -> None:
    """RUNNING is supervisord's word once startsecs have passed; under load the embedded
    server may still be starting then. `up` returns once it answers, so that `up` and then
    `submit` (the README's first command) finds it."""
    name = fleet.server_program
    if not fleet.server.embedded or states.get(name) != ProcessState.RUNNING:
        return
    from multiagent.fleet.serverinfo import probe

    deadline = time.monotonic() + timeout
    while not probe(fleet.server.url, 1.0).ok and time.monotonic() < deadline:
        time.sleep(0.1)


def start_new(
    fleet: Fleet,
    layout: Layout,
    supervisor: Supervisor,
    plan: Plan,
    started_supervisord: bool,
    wrote_programs: bool,
    skip: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """Add and start the programs the plan adds or starts, the server first so agents
    find it when they first poll. A supervisord just started has loaded them already."""
    added: list[str] = []
    if not started_supervisord and (wrote_programs or plan.of_kind(planning.ADD)):
        added = supervisor.reload_config()[0]
    ordered = sorted(
        (a for a in plan.of_kind(planning.ADD, planning.START) if a.name not in skip),
        key=lambda a: (a.name != fleet.server_program, a.name),
    )
    for action in ordered:
        if triggers.read_drain(layout, action.name) == DrainMode.HOLD:
            # a hold from before it was loaded, or one no change is pending behind: no
            # process of it runs, so none is busy
            triggers.clear_drain(layout, action.name)
        if action.kind == planning.ADD and action.name in added:
            supervisor.add(action.name)  # autostart=true starts it
        elif action.kind == planning.START or not started_supervisord:
            try:
                supervisor.start(action.name, False)
            except SupervisorError as exc:
                if exc.code != Faults.ALREADY_STARTED:
                    raise
    return [a.name for a in ordered]


def changes(
    fleet: Fleet,
    target: SupervisorTarget,
    plan: Plan,
    skip: set[str] | frozenset[str] = frozenset(),
) -> list[Operation]:
    """The safe operation for each agent whose change needs its process to go."""
    actions = plan.of_kind(planning.RESTART, planning.REPLACE, planning.REMOVE)
    if not actions:
        return []
    from multiagent.fleet.model.operations import Remove, Replace, SafeRestart

    operations: list[Operation] = []
    for action in actions:
        if action.name in skip:
            continue
        kind = program_kind(fleet, target, action.name)
        if action.kind == planning.RESTART:
            operations.append(SafeRestart(action.name, kind, fleet.restart.method))
        elif action.kind == planning.REPLACE:
            operations.append(Replace(action.name, kind))
        else:
            operations.append(Remove(action.name, kind))
    return operations


def up(
    fleet: Fleet,
    supervisor: Supervisor,
    wait: bool = True,
    timeout: float = 60.0,
    restart_timeout: float | None = None,
    progress: Callable[[Sequence[Operation]], None] | None = None,
    say: Callable[[str], None] | None = None,
    canary: CanaryGate | None = None,
    force_rejected: bool = False,
    lines: Lines | None = None,
) -> UpReport:
    """`lines` hears of each file written and program started as it happens."""
    lines = lines or Lines(quiet=True)
    layout = Layout(fleet.state_dir)
    target = supervisor.target
    supervisor.ask_ahead()  # supervisord builds its answer while the fleet is rendered
    check_host(fleet, target.mode)
    rendered = render_or_reuse(fleet, target)
    supervisord_pid = supervisor.pid() if supervisor.is_running() else None
    rendering = rendered.rendering
    change = rendering_digest(rendering)
    refuse_rejected(layout, change, force_rejected)
    observed = look(fleet, layout, supervisor, rendered, supervisord_pid is not None)
    plan = make_plan(fleet, layout, supervisor, rendered, observed)
    report = UpReport(plan)
    report.duplicates = _duplicates(fleet, plan)
    if supervisord_pid is None or plan.of_kind(planning.ADD, planning.START):
        report.strays = orphans(fleet, layout, supervisord_pid)
    server_ours = _server_is_ours(fleet, report, observed.loaded)
    check_before_writing(fleet, target, supervisord_pid is not None, server_ours)
    prepare_dirs(fleet, layout, target)
    mint_agent_tokens(fleet, layout)
    ask_to_leave(layout, report.strays, program_kinds(fleet, target, report.strays))
    later = _pick_canaries(fleet, supervisor, rendering, plan, report, canary)
    staged = {a.name for a in plan.of_kind(planning.REPLACE)}
    report.written = write_files(
        fleet,
        rendering,
        target,
        hold_back=set(report.strays),
        leave=later,
        staged=staged,
        texts_on_disk=rendered.reused,
    )
    pending.drop_others(layout, staged)
    if not rendered.reused:
        remember(layout, rendering, rendered.key)
    from multiagent.fleet.commands.prometheus import (
        write_targets,  # Prometheus' targets file, for `metrics:`
    )

    report.written += write_targets(fleet, layout)
    lines.wrote(report.written)
    begun = time.monotonic()  # a supervisord started now starts the programs itself
    report.started_supervisord = ensure_supervisord(supervisor, layout)
    if report.started_supervisord:
        lines.say(
            f"started supervisord (pid {report.started_supervisord}, socket {target.socket_url})"
        )
    wrote_programs = any(p.parent == target.program_dir for p in report.written)
    report.started = start_new(
        fleet,
        layout,
        supervisor,
        plan,
        report.started_supervisord is not None,
        wrote_programs,
        set(report.strays),
    )
    lines.started(report.started, time.monotonic() - begun, fleet.server_program)
    timeout_s = restart_timeout or fleet.restart.timeout
    operations = changes(fleet, target, plan, skip=later)
    if operations:
        # Every changed agent at once: each waits for its own job, none for another's.
        report.applied = _apply(fleet, supervisor, operations, timeout_s, wait, progress)
    if canary is not None and report.canaries:
        operations += _after_canaries(
            fleet, supervisor, rendering, plan, report, canary, later, timeout_s, progress, say
        )
    if report.strays:
        report.started += _take_over(
            fleet, supervisor, rendering, report, wait, restart_timeout, say, lines
        )
    if wait and report.started:
        startsecs = {name: agent.startsecs for name, agent in fleet.agents.items()}
        report.states = wait_settled(supervisor, report.started, timeout, startsecs)
        await_server(fleet, report.states, timeout)
    if not plan.is_noop or read_applied(layout, supervisor) is None:
        unsettled = {op.name for op in operations if not op.succeeded}
        if report.canary_failure:
            unsettled |= set(report.canaries)  # back on files older than the fleet file
        removed = {a.name for a in plan.of_kind(planning.REMOVE)}
        write_applied(layout, supervisor, rendering, unsettled | removed, _seen(rendering, report))
    return report


def _seen(rendering: Rendering, report: UpReport) -> set[str] | None:
    """The programs supervisord was seen to have at the end of the wait, if the wait
    looked at every program of the rendering (a cold `up`); else None."""
    if not set(rendering.programs) <= set(report.states):
        return None
    return {name for name, state in report.states.items() if state != ProcessState.UNKNOWN}


def _duplicates(fleet: Fleet, plan: Plan) -> list[str]:
    """Agents about to start that another host may run: refused with the fleet file's
    `duplicate_names: refuse` (before anything is written), else returned to warn of."""
    starting = [
        a.name for a in plan.of_kind(planning.ADD, planning.START) if a.name in fleet.agents
    ]
    if not starting or fleet.server.embedded:
        return []
    from multiagent.fleet.commands.duplicates import DuplicateNameError, seen_elsewhere

    found = seen_elsewhere(fleet, starting)
    if found and fleet.duplicate_names == "refuse":
        raise DuplicateNameError(found)
    return found


def refuse_rejected(layout: Layout, change: str, force: bool) -> None:
    """Refuse the change a canary rejected (RejectedChangeError); a new change, or
    `force`, forgets the rejection."""
    rejection = rejected.read(layout)
    if rejection is None:
        return
    if rejection.digest == change and not force:
        raise RejectedChangeError(rejection.line(), rejected.ADVICE)
    rejected.clear(layout)


def _apply(
    fleet: Fleet,
    supervisor: Supervisor,
    operations: list[Operation],
    timeout: float,
    wait: bool,
    progress: Callable[[Sequence[Operation]], None] | None,
) -> RunResult:
    from multiagent.fleet.reconcile.scheduler import fleet_env
    from multiagent.fleet.reconcile.scheduler import run as run_operations

    return run_operations(
        operations,
        fleet_env(fleet, supervisor),
        max_parallel=len(operations),
        timeout=timeout,
        stop_on_failure=False,
        wait=wait,
        progress=progress,
    )


def changed_agents(fleet: Fleet, plan: Plan) -> list[str]:
    """Agents whose change needs their process to go (a canary's candidates)."""
    kinds = (planning.RESTART, planning.REPLACE)
    return [a.name for a in plan.of_kind(*kinds) if a.name in fleet.agents]


def _pick_canaries(
    fleet: Fleet,
    supervisor: Supervisor,
    rendering: Rendering,
    plan: Plan,
    report: UpReport,
    gate: CanaryGate | None,
) -> set[str]:
    """Keep every changed agent's previous files (for a failed gate, or `tf-fleet
    rollback`); with a canary gate, choose the canaries and return the agents whose
    change waits for them."""
    changed = changed_agents(fleet, plan)
    if not changed:
        return set()
    from multiagent.fleet.commands import canary

    canary.save_previous(Layout(fleet.state_dir), rendering, changed)
    if gate is None:
        return set()
    report.canaries = canary.choose(fleet, supervisor, changed, gate.count)
    return set(changed) - set(report.canaries)


def _after_canaries(
    fleet: Fleet,
    supervisor: Supervisor,
    rendering: Rendering,
    plan: Plan,
    report: UpReport,
    gate: CanaryGate,
    later: set[str],
    timeout: float,
    progress: Callable[[Sequence[Operation]], None] | None,
    say: Callable[[str], None] | None,
) -> list[Operation]:
    """The gate; then the rest of the change, or the canaries rolled back."""
    from multiagent.fleet.commands import canary

    ops = {op.name: op for op in (report.applied.operations if report.applied else [])}
    failed = [f"{n}: {ops[n].text}" for n in report.canaries if n in ops and not ops[n].succeeded]
    target = supervisor.target
    report.canary_failure = "; ".join(failed) or canary.check(
        fleet, supervisor, report.canaries, gate, say
    )
    if report.canary_failure:
        layout = Layout(fleet.state_dir)
        why = report.canary_failure
        rejection = rejected.Rejection(
            rendering_digest(rendering), time.time(), tuple(report.canaries), why
        )
        rejected.record(layout, rejection)  # before the rollback: it may take a job's time
        canary.forget(layout, sorted(later))
        back = canary.restore(fleet, target, report.canaries)
        report.rolled_back = _apply(fleet, supervisor, back, timeout, True, progress)
        return back
    staged = {a.name for a in plan.of_kind(planning.REPLACE)} & later
    report.written += write_files(fleet, rendering, target, staged=staged)
    rest = [op for op in changes(fleet, target, plan) if op.name in later]
    if rest:
        report.rest = _apply(fleet, supervisor, rest, timeout, True, progress)
    return rest


def _take_over(
    fleet: Fleet,
    supervisor: Supervisor,
    rendering: Rendering,
    report: UpReport,
    wait: bool,
    restart_timeout: float | None,
    say: Callable[[str], None] | None,
    lines: Lines,
) -> list[str]:
    """Wait for the strays of a dead supervisord to finish their jobs and exit, starting
    each one's program under this supervisord as soon as it is gone (the server first,
    which runs no job); returns the names started."""
    layout = Layout(fleet.state_dir)
    left = dict(report.strays)
    started: list[str] = []
    deadline = time.monotonic() + (restart_timeout or fleet.restart.timeout)
    next_say = 0.0
    while left:
        gone = sorted(n for n, pids in left.items() if not alive(pids))
        for name in gone:
            del left[name]
            triggers.clear_drain(layout, name)
        if gone:
            staged = pending.staged(layout)  # changes still waiting for their swap
            write_files(fleet, rendering, supervisor.target, hold_back=set(left), staged=staged)
            begun = time.monotonic()
            _load_and_start(supervisor, gone)
            lines.started(gone, time.monotonic() - begun, fleet.server_program)
            started += gone
        if not left or not wait or time.monotonic() > deadline:
            break
        if say and time.monotonic() >= next_say:
            for name, pids in sorted(left.items()):
                say(
                    f"{name}: waiting for pid {', '.join(map(str, pids))}, left running by a"
                    " supervisord that died, to finish its job and exit"
                )
            next_say = time.monotonic() + PROGRESS_SECONDS
        time.sleep(0.1)
    report.strays_left = left
    return started


def _load_and_start(supervisor: Supervisor, names: list[str]) -> None:
    added = supervisor.reload_config()[0]
    for name in names:
        if name in added:
            supervisor.add(name)  # autostart=true starts it
            continue
        try:
            supervisor.start(name, False)
        except SupervisorError as exc:
            if exc.code != Faults.ALREADY_STARTED:
                raise
