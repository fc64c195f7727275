"""Safe operations on agents, as pure state machines over a Snapshot of facts.

Each operation decides, from the snapshot alone, its next stage and the actions the
shell (`scheduler.py`) is to carry out; nothing here does I/O, so every transition is
tested on hand-built snapshots. Nothing here kills a process that runs a job: an agent
is only ever *asked* (SIGUSR1, restart file, drain flag) and stopped or swapped once
supervisord reports that it has exited by itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

from multiagent.fleet.messages import clock
from multiagent.fleet.model.facts import ProcessInfo, ProcessState, StatusRead, judge
from multiagent.fleet.model.fleetfile import ProgramKind
from multiagent.vocabulary import AgentState, DrainMode, Phase

# A status file's last poll may precede the start time we compute by a clock tick.
START_SLACK = 0.05

# What an operation asks the shell to do (Action.verb).
START = "start"  # supervisord startProcess; already started is fine
STOP = "stop"  # supervisord stopProcess, waiting; already stopped is fine
ASK_SIGNAL = "ask-signal"  # SIGUSR1 through supervisord
ASK_FILE = "ask-file"  # the restart file
SET_DRAIN = "set-drain"  # the drain flag, with arg DrainMode.DRAIN or DrainMode.HOLD
SERVER_STATE = "server-state"  # the agent's state on the server, arg the state
SWAP_PROGRAM = "swap-program"  # remove the old program, clear its drain flag, add the new
# SWAP_PROGRAM's arg for an upstream agent: a drain flag stays, so that the new program's
# gate holds a drained agent until `resume` (only the hold that brought it down goes).
KEEP_DRAIN = "keep-drain"
REMOVE_PROGRAM = "remove-program"  # remove the program, its file and the agent's files
TELL_REMOVED = "tell-removed"  # the server's last word of an agent: removed from the fleet


class Stage:
    """Where an operation is (Operation.stage): the rows of its transition table, and the
    `stage` of each agent in `--json` reports. Named once; the strings are what a report
    shows."""

    QUEUED: Final = "queued"  # not begun
    ASKED: Final = "asked"  # SafeRestart: the agent was asked, it exits when idle
    SETTLING: Final = "settling"  # SafeRestart: it was starting; wait before asking
    COMING_BACK: Final = "coming-back"  # started again (SafeRestart) or swapped (Replace)
    STOPPING: Final = "stopping"  # SafeStop: told to stay down once idle
    DOWN_PENDING: Final = "down-pending"  # SafeStop: idle for sure; stopped on the next step
    DOWN: Final = "down"  # SafeStop: gone; Replace and Remove go on from here
    DRAINING: Final = "draining"  # Drain: takes no new job
    DONE: Final = "done"
    FAILED: Final = "failed"
    OVER: Final = frozenset({DONE, FAILED})


@dataclass(frozen=True)
class Action:
    verb: str
    name: str
    arg: str = ""
    reason: str = ""  # the operator's words, shown with a drain (flag file, server comment)


@dataclass(frozen=True)
class AgentFacts:
    """Everything known of one program at one moment."""

    info: ProcessInfo | None = None  # supervisord's view; None: not loaded
    status_file: StatusRead | None = None  # the status file as read (any writer, any age)
    started: float | None = None  # when the running pid started, to a clock tick
    # Child processes of the running pid: of upstream agents, and of tf-agents whose
    # status file says they are idle (a phase still running contradicts it).
    children: int = 0
    server_job: str | None = None  # the job the server holds for it (upstream agents)
    log_tail: tuple[str, ...] = ()  # the end of its log, when it is down or failing
    server_unknown: str | None = None  # why the server could not say whether it runs a job


@dataclass(frozen=True)
class Snapshot:
    agents: dict[str, AgentFacts]
    now: float
    server_known: bool = False  # the fleet has a server to set agent states on

    def facts(self, name: str) -> AgentFacts:
        return self.agents.get(name) or AgentFacts()

    def info(self, name: str) -> ProcessInfo | None:
        return self.facts(name).info

    def status(self, name: str) -> dict[str, Any] | None:
        """The status file, only if the process running now wrote it, recently."""
        info = self.info(name)
        if not info or not info.pid:
            return None
        return judge(self.facts(name).status_file, info.pid, self.now)[0]

    def busy(self, name: str, kind: str) -> tuple[bool, str]:
        """Whether the agent runs a job, and what it is doing, in words."""
        facts = self.facts(name)
        info = facts.info
        if not info or info.state not in ProcessState.LIVE:
            return False, (info.state.lower() if info else "not loaded")
        if kind == ProgramKind.TF_AGENT:
            data, why = judge(facts.status_file, info.pid, self.now)
            if data is None:
                # Unknown is busy: only a status file the running pid wrote proves idleness.
                return True, f"not known to be idle ({why}{_activity(facts)})"
            if data.get("job_id") or data.get("state") in Phase.ALL:
                since = data.get("since")
                when = clock(since) if since else "?"
                phase = data.get("phase") or data.get("state")
                return True, f"waiting for job {data.get('job_id')} in phase {phase} since {when}"
            if facts.children:
                return True, (
                    f"not known to be idle (its status file says {data.get('state')}, but it"
                    f" has {facts.children} child process(es))"
                )
            return False, data.get("state") or "idle"
        if facts.children:
            return True, f"waiting for its job to end ({facts.children} child process(es))"
        if facts.server_job:
            # Between phases an upstream agent runs no child; its server knows the job.
            return True, f"waiting for job {facts.server_job} (as the server reports it)"
        if facts.server_unknown:
            # Unknown is busy: with no child, only its server can prove it holds no job.
            return True, f"not known to be idle (no child process; {facts.server_unknown})"
        return False, "idle"


def _activity(facts: AgentFacts) -> str:
    if facts.children:
        return f"; it has {facts.children} child process(es)"
    if facts.server_job:
        return f"; the server says it runs job {facts.server_job}"
    return ""


@dataclass
class Operation:
    name: str
    kind: str  # the program kind: tf-agent, upstream, server
    stage: str = Stage.QUEUED
    text: str = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    old_pid: int = 0
    new_pid: int = 0
    error: str | None = None
    result: str = ""
    notes: list[str] = field(default_factory=list)
    on_job: bool = False  # waiting for a running job: nothing will change for a while

    verb = "operation"

    @property
    def done(self) -> bool:
        return self.stage in Stage.OVER

    @property
    def failed(self) -> bool:
        return self.stage == Stage.FAILED

    @property
    def succeeded(self) -> bool:
        return self.stage == Stage.DONE

    @property
    def queued(self) -> bool:
        return self.stage == Stage.QUEUED

    @property
    def elapsed(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at

    def begin(self, snap: Snapshot) -> list[Action]:
        """The first step: what to ask, from the facts of the moment."""
        self.started_at = snap.now
        info = snap.info(self.name)
        self.old_pid = info.pid if info else 0
        self.text = "asked"
        return []

    def step(self, snap: Snapshot) -> list[Action]:
        raise NotImplementedError

    def finish(self, snap: Snapshot, result: str) -> None:
        self.stage = Stage.DONE
        self.finished_at = snap.now
        self.result = self.text = result

    def fail(self, error: str, now: float | None = None) -> None:
        self.stage = Stage.FAILED
        self.finished_at = time.time() if now is None else now
        self.error = error
        self.text = f"FAILED: {error}"

    def _took(self, snap: Snapshot) -> str:
        return f"{snap.now - (self.started_at or snap.now):.1f}s"

    # shared steps ---------------------------------------------------------------
    def _failure(self, snap: Snapshot) -> str | None:
        """A new process that will not stay up: the reason, with its last log lines.
        EXITED with a non-zero status is the old process between exit and respawn."""
        facts = snap.facts(self.name)
        info = facts.info
        if not info:
            return "supervisord no longer knows this program"
        if (
            info.state in ProcessState.FAILED
            or info.state == ProcessState.STOPPED
            or (info.state == ProcessState.EXITED and info.exitstatus == 0)
        ):
            detail = f"; log: {' | '.join(facts.log_tail)}" if facts.log_tail else ""
            why = f", {info.spawnerr}" if info.spawnerr else ""
            return f"did not come back ({info.state}{why}){detail}"
        return None

    def _back(self, snap: Snapshot) -> bool:
        """The new process is up: tf-agent has polled the server (or is up but told not to
        poll); any other program has lived past startsecs (RUNNING)."""
        facts = snap.facts(self.name)
        info = facts.info
        if (
            not info
            or not info.pid
            or info.pid == self.old_pid
            or info.state not in ProcessState.LIVE
        ):
            return False
        self.new_pid = info.pid
        if self.kind != ProgramKind.TF_AGENT:
            return info.state == ProcessState.RUNNING
        data = snap.status(self.name)
        if not data:
            return False
        started = facts.started or info.start
        last_poll = data.get("last_poll")
        polled = isinstance(last_poll, (int, float)) and last_poll >= started - START_SLACK
        return polled or data.get("state") in AgentState.QUIET

    def _wait_back(self, snap: Snapshot) -> None:
        failure = self._failure(snap)
        if failure:
            self.fail(failure, snap.now)
        elif self._back(snap):
            self.finish(
                snap, f"back in {self._took(snap)} (pid {self.old_pid or '-'} -> {self.new_pid})"
            )
        else:
            self.text = self._not_back_yet(snap)

    def _not_back_yet(self, snap: Snapshot) -> str:
        facts = snap.facts(self.name)
        info = facts.info
        if (
            self.kind != ProgramKind.TF_AGENT
            or not info
            or not info.pid
            or info.pid == self.old_pid
        ):
            return "restarting"
        _, why = judge(facts.status_file, info.pid, snap.now)
        if not why or info.state == ProcessState.STARTING:
            return f"restarted (pid {info.pid}); waiting for its first poll"
        return f"restarted (pid {info.pid}); not known to have polled: {why}"


class SafeRestart(Operation):
    """Ask the agent to exit when idle; supervisord starts it again."""

    verb = "restart"

    def __init__(self, name: str, kind: str, method: str):
        super().__init__(name, kind)
        self.method = method  # "signal" (SIGUSR1) or "file" (the restart file)

    def begin(self, snap: Snapshot) -> list[Action]:
        super().begin(snap)
        info = snap.info(self.name)
        if not info or info.state not in ProcessState.LIVE:
            # Nothing runs, so nothing can be interrupted: just start it.
            self.stage, self.text = Stage.COMING_BACK, "starting"
            return [Action(START, self.name)]
        if info.state == ProcessState.STARTING:
            # An exit within startsecs counts as a failed start (BACKOFF): ask once RUNNING.
            self.stage, self.text = Stage.SETTLING, "waiting for it to finish starting"
            return []
        return self._ask()

    def _ask(self) -> list[Action]:
        self.stage = Stage.ASKED
        return [Action(ASK_FILE if self.method == "file" else ASK_SIGNAL, self.name)]

    def step(self, snap: Snapshot) -> list[Action]:
        info = snap.info(self.name)
        if self.stage == Stage.SETTLING:
            if info and info.state == ProcessState.RUNNING:
                self.old_pid = info.pid
                return self._ask()
            if not info or info.state not in ProcessState.LIVE:
                self.fail(f"did not start ({info.state if info else 'not loaded'})", snap.now)
            return []
        actions: list[Action] = []
        if self.stage == Stage.ASKED:
            if info and info.pid == self.old_pid and info.state in ProcessState.LIVE:
                self.on_job, self.text = snap.busy(self.name, self.kind)
                if not self.on_job:
                    self.text = "asked; restarting"
                return []
            self.on_job = False
            if info and info.state == ProcessState.EXITED and info.exitstatus != 0:
                # supervisord would respawn it on its next pass, up to a second away
                actions.append(Action(START, self.name))
            self.stage = Stage.COMING_BACK
        self._wait_back(snap)
        return actions


class SafeStop(Operation):
    """Bring an agent down without touching its job: drain with hold (tf-agent), or
    SIGUSR1 and catch the respawn before it can poll (upstream agents know no hold)."""

    verb = "stop"

    def begin(self, snap: Snapshot) -> list[Action]:
        super().begin(snap)
        info = snap.info(self.name)
        if not info or info.state not in ProcessState.LIVE:
            self.stage = Stage.DOWN
            return []
        if self.kind == ProgramKind.SERVER:
            self.stage = Stage.DOWN_PENDING  # the server runs no job: stop it on the next step
            return []
        self.stage = Stage.STOPPING
        if self.kind == ProgramKind.TF_AGENT:
            return [Action(SET_DRAIN, self.name, DrainMode.HOLD)]
        return [Action(ASK_SIGNAL, self.name)]

    def step(self, snap: Snapshot) -> list[Action]:
        info = snap.info(self.name)
        if self.stage == Stage.DOWN_PENDING:
            self.stage = Stage.DOWN
        elif self.stage == Stage.STOPPING:
            if info and info.pid == self.old_pid and info.state in ProcessState.LIVE:
                self.on_job, self.text = snap.busy(self.name, self.kind)
                if not self.on_job:
                    self.text = "idle; exiting"
                return []
            # Gone, or (an upstream agent) respawned: a new process is stopped before it polls.
            self.on_job = False
            self.stage = Stage.DOWN
        if self.stage == Stage.DOWN:
            return self.after_down(snap)
        return []

    def _stop_if_up(self, snap: Snapshot) -> list[Action]:
        info = snap.info(self.name)
        return [Action(STOP, self.name)] if info and info.state not in ProcessState.DOWN else []

    def after_down(self, snap: Snapshot) -> list[Action]:
        actions = self._stop_if_up(snap)
        self.finish(snap, f"stopped after {self._took(snap)}")
        return actions


class Replace(SafeStop):
    """The program entry changed: stop safely, swap the program, start the new one."""

    verb = "replace"

    def after_down(self, snap: Snapshot) -> list[Action]:
        info = snap.info(self.name)
        if info and info.pid:
            self.old_pid = info.pid
        self.stage, self.text = Stage.COMING_BACK, "swapping the program"
        keep = KEEP_DRAIN if self.kind == ProgramKind.UPSTREAM else ""
        return [*self._stop_if_up(snap), Action(SWAP_PROGRAM, self.name, keep)]

    def step(self, snap: Snapshot) -> list[Action]:
        if self.stage == Stage.COMING_BACK:
            self._wait_back(snap)
            return []
        return super().step(snap)


class Remove(SafeStop):
    """Gone from the fleet file: stop safely, remove the program and the agent's files."""

    verb = "remove"

    def after_down(self, snap: Snapshot) -> list[Action]:
        self.finish(snap, f"removed after {self._took(snap)}")
        actions = [*self._stop_if_up(snap), Action(REMOVE_PROGRAM, self.name)]
        if snap.server_known and self.kind != ProgramKind.SERVER:
            # The server lists the name until its agent TTL: it says the fleet removed it.
            actions.append(Action(TELL_REMOVED, self.name))
        return actions


@dataclass
class Drain(Operation):
    """Take no new job; done once the agent is idle (it stays up)."""

    reason: str = ""  # the operator's, shown on the server with the agent's state

    verb = "drain"

    def begin(self, snap: Snapshot) -> list[Action]:
        super().begin(snap)
        self.stage = Stage.DRAINING
        if self.kind == ProgramKind.TF_AGENT:
            return [Action(SET_DRAIN, self.name, DrainMode.DRAIN, self.reason)]
        if snap.server_known:
            # Upstream: `offline` on its server takes no job; the flag makes its program's
            # gate hold it after a restart, which would post `waiting` (host/gate.py).
            return [
                Action(SET_DRAIN, self.name, DrainMode.DRAIN, self.reason),
                Action(SERVER_STATE, self.name, AgentState.OFFLINE, self.reason),
            ]
        self.fail("an upstream agent can only be drained through its server", snap.now)
        return []

    def step(self, snap: Snapshot) -> list[Action]:
        busy, text = snap.busy(self.name, self.kind)
        info = snap.info(self.name)
        self.on_job = busy
        if busy:
            self.text = text
        elif (
            info
            and info.state in ProcessState.LIVE
            and self.kind == ProgramKind.TF_AGENT
            and (snap.status(self.name) or {}).get("state") != AgentState.DRAINED
        ):
            self.text = "draining"
        else:
            self.finish(snap, f"idle after {self._took(snap)}")
        return []


@dataclass
class RunResult:
    operations: list[Operation]
    timed_out: bool = False
    stopped_early: bool = False  # a failure stopped a rolling operation

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(op.succeeded for op in self.operations)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "timed_out": self.timed_out,
            "stopped_early": self.stopped_early,
            "agents": [
                {
                    "name": op.name,
                    "operation": op.verb,
                    "stage": op.stage,
                    "result": op.result or None,
                    "error": op.error,
                    "text": op.text,
                    "seconds": round(op.elapsed, 3) if op.elapsed is not None else None,
                    "old_pid": op.old_pid or None,
                    "new_pid": op.new_pid or None,
                    "notes": op.notes,
                }
                for op in self.operations
            ],
        }
