"""Every transition of every safe operation, on hand-built snapshots: no processes.

Each row reads (operation in a stage, facts of the moment) -> (next stage, actions asked
of the shell, words shown). The end-to-end tests show the shell carries the actions out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from multiagent.fleet.model import operations as ops
from multiagent.fleet.model.facts import ProcessInfo, StatusRead
from multiagent.fleet.model.fleetfile import ProgramKind
from multiagent.fleet.model.operations import (
    AgentFacts,
    Drain,
    Operation,
    Remove,
    Replace,
    SafeRestart,
    SafeStop,
    Snapshot,
    Stage,
)
from multiagent.vocabulary import STATUS_STALE_SECONDS

NOW = 10_000.0
OLD, NEW = 100, 200
STARTED = NOW - 5  # when the new process started


def proc(state: str = "RUNNING", pid: int = OLD, exitstatus: int = 0, spawnerr: str = ""):
    live = state in ("RUNNING", "STARTING", "STOPPING", "BACKOFF")
    return ProcessInfo(
        name="a",
        state=state,
        pid=pid if live else 0,
        start=STARTED,
        now=NOW,
        description="",
        spawnerr=spawnerr,
        exitstatus=exitstatus,
        log_file="",
    )


def idle(pid: int = OLD, last_poll: float | None = NOW - 1, state: str = "waiting"):
    return {"pid": pid, "state": state, "job_id": None, "phase": None, "last_poll": last_poll}


def busy(pid: int = OLD):
    return {"pid": pid, "state": "test", "job_id": "j-1", "phase": "test", "since": NOW - 60}


@dataclass
class Row:
    label: str
    op: Operation
    stage: str  # the stage the operation is in before the step ("new": call begin)
    facts: AgentFacts
    next_stage: str
    actions: list[tuple[str, str]] = field(default_factory=list)
    text: str | None = None  # a fragment of op.text afterwards
    server_known: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # attributes to check afterwards


def facts(info=None, status=None, written: float = NOW - 1, **kw: Any) -> AgentFacts:
    """The facts of agent "a"; its status file (if given) written at `written`."""
    read = StatusRead(status, written) if status is not None else None
    return AgentFacts(info=info, status_file=read, started=STARTED, **kw)


def restart(kind: str = ProgramKind.TF_AGENT, method: str = "signal") -> SafeRestart:
    return SafeRestart("a", kind, method)


ROWS = [
    # SafeRestart.begin ------------------------------------------------------------
    Row(
        "restart: not loaded is started",
        restart(),
        "new",
        facts(),
        Stage.COMING_BACK,
        [(ops.START, "")],
    ),
    Row(
        "restart: STOPPED is started",
        restart(),
        "new",
        facts(proc("STOPPED")),
        Stage.COMING_BACK,
        [(ops.START, "")],
        "starting",
    ),
    Row(
        "restart: FATAL is started",
        restart(),
        "new",
        facts(proc("FATAL")),
        Stage.COMING_BACK,
        [(ops.START, "")],
    ),
    Row(
        "restart: STARTING waits to settle",
        restart(),
        "new",
        facts(proc("STARTING")),
        Stage.SETTLING,
        [],
        "finish starting",
    ),
    Row(
        "restart: RUNNING is asked by signal",
        restart(),
        "new",
        facts(proc(), idle()),
        Stage.ASKED,
        [(ops.ASK_SIGNAL, "")],
        extra={"old_pid": OLD},
    ),
    Row(
        "restart: RUNNING is asked by file",
        restart(method="file"),
        "new",
        facts(proc(), idle()),
        Stage.ASKED,
        [(ops.ASK_FILE, "")],
    ),
    Row(
        "restart: a busy agent is asked too (it finishes its job first)",
        restart(),
        "new",
        facts(proc(), busy()),
        Stage.ASKED,
        [(ops.ASK_SIGNAL, "")],
    ),
    # SafeRestart settling ---------------------------------------------------------
    Row(
        "restart settling: RUNNING is asked",
        restart(),
        Stage.SETTLING,
        facts(proc(pid=NEW)),
        Stage.ASKED,
        [(ops.ASK_SIGNAL, "")],
        extra={"old_pid": NEW},
    ),
    Row(
        "restart settling: still STARTING",
        restart(),
        Stage.SETTLING,
        facts(proc("STARTING")),
        Stage.SETTLING,
        [],
    ),
    Row(
        "restart settling: BACKOFF fails",
        restart(),
        Stage.SETTLING,
        facts(proc("BACKOFF")),
        Stage.FAILED,
        [],
        "did not start (BACKOFF)",
    ),
    Row(
        "restart settling: gone fails",
        restart(),
        Stage.SETTLING,
        facts(),
        Stage.FAILED,
        [],
        "not loaded",
    ),
    # SafeRestart asked --------------------------------------------------------------
    Row(
        "restart asked: busy tf-agent waits for its job",
        restart(),
        Stage.ASKED,
        facts(proc(), busy()),
        Stage.ASKED,
        [],
        "waiting for job j-1 in phase test",
        extra={"on_job": True},
    ),
    Row(
        "restart asked: idle tf-agent is about to exit",
        restart(),
        Stage.ASKED,
        facts(proc(), idle()),
        Stage.ASKED,
        [],
        "asked; restarting",
        extra={"on_job": False},
    ),
    Row(
        "restart asked: exited 1 is started at once",
        restart(),
        Stage.ASKED,
        facts(proc("EXITED", exitstatus=1)),
        Stage.COMING_BACK,
        [(ops.START, "")],
        "restarting",
    ),
    Row(
        "restart asked: respawned and polled is back",
        restart(),
        Stage.ASKED,
        facts(proc(pid=NEW), idle(NEW, NOW - 1)),
        Stage.DONE,
        [],
        "back in",
        extra={"new_pid": NEW},
    ),
    Row(
        "restart asked: respawned, not polled yet",
        restart(),
        Stage.ASKED,
        facts(proc("STARTING", pid=NEW)),
        Stage.COMING_BACK,
        [],
        "waiting for its first poll",
    ),
    Row(
        "restart asked: upstream with children is busy",
        restart(ProgramKind.UPSTREAM),
        Stage.ASKED,
        facts(proc(), children=2),
        Stage.ASKED,
        [],
        "2 child process(es)",
        extra={"on_job": True},
    ),
    Row(
        "restart asked: upstream between phases is busy by the server's word",
        restart(ProgramKind.UPSTREAM),
        Stage.ASKED,
        facts(proc(), server_job="j-9"),
        Stage.ASKED,
        [],
        "job j-9",
        extra={"on_job": True},
    ),
    Row(
        "restart asked: idle upstream",
        restart(ProgramKind.UPSTREAM),
        Stage.ASKED,
        facts(proc()),
        Stage.ASKED,
        [],
        "asked; restarting",
    ),
    # SafeRestart coming-back ------------------------------------------------------
    Row(
        "back: a poll after the start",
        restart(),
        Stage.COMING_BACK,
        facts(proc(pid=NEW), idle(NEW, STARTED + 0.5)),
        Stage.DONE,
        [],
        f"{OLD} -> {NEW}",
    ),
    Row(
        "back: a poll within the clock slack of the start",
        restart(),
        Stage.COMING_BACK,
        facts(proc(pid=NEW), idle(NEW, STARTED - 0.01)),
        Stage.DONE,
        [],
    ),
    Row(
        "back: the last poll predates the process",
        restart(),
        Stage.COMING_BACK,
        facts(proc(pid=NEW), idle(NEW, STARTED - 3)),
        Stage.COMING_BACK,
        [],
        f"restarted (pid {NEW}); waiting for its first poll",
    ),
    Row(
        "back: a new process whose status file is not written says so",
        restart(),
        Stage.COMING_BACK,
        facts(proc(pid=NEW), idle(NEW, NOW), NOW - 3600),
        Stage.COMING_BACK,
        [],
        f"restarted (pid {NEW}); not known to have polled: status file not written since",
    ),
    Row(
        "back: a status file of the old process is not trusted",
        restart(),
        Stage.COMING_BACK,
        facts(proc(pid=NEW), idle(OLD, NOW)),
        Stage.COMING_BACK,
        [],
    ),
    Row(
        "back: drained and not polling counts as back",
        restart(),
        Stage.COMING_BACK,
        facts(proc(pid=NEW), idle(NEW, None, "drained")),
        Stage.DONE,
        [],
    ),
    Row(
        "back: the old pid again is not back",
        restart(),
        Stage.COMING_BACK,
        facts(proc(pid=OLD), idle(OLD, NOW)),
        Stage.COMING_BACK,
        [],
    ),
    Row(
        "back: FATAL fails with its log and spawn error",
        restart(),
        Stage.COMING_BACK,
        facts(proc("FATAL", spawnerr="Exited too quickly"), log_tail=("boom", "bad config")),
        Stage.FAILED,
        [],
        "did not come back (FATAL, Exited too quickly); log: boom | bad config",
    ),
    Row(
        "back: BACKOFF fails",
        restart(),
        Stage.COMING_BACK,
        facts(proc("BACKOFF", pid=NEW)),
        Stage.FAILED,
        [],
        "BACKOFF",
    ),
    Row(
        "back: EXITED 0 (told to stay down) fails",
        restart(),
        Stage.COMING_BACK,
        facts(proc("EXITED", exitstatus=0)),
        Stage.FAILED,
        [],
        "EXITED",
    ),
    Row(
        "back: EXITED 1 is between exit and respawn",
        restart(),
        Stage.COMING_BACK,
        facts(proc("EXITED", exitstatus=1)),
        Stage.COMING_BACK,
        [],
    ),
    Row(
        "back: STOPPED by someone fails",
        restart(),
        Stage.COMING_BACK,
        facts(proc("STOPPED")),
        Stage.FAILED,
        [],
        "STOPPED",
    ),
    Row(
        "back: unloaded fails",
        restart(),
        Stage.COMING_BACK,
        facts(),
        Stage.FAILED,
        [],
        "no longer knows",
    ),
    Row(
        "back: upstream RUNNING is back",
        restart(ProgramKind.UPSTREAM),
        Stage.COMING_BACK,
        facts(proc(pid=NEW)),
        Stage.DONE,
        [],
    ),
    Row(
        "back: upstream STARTING is not back yet",
        restart(ProgramKind.UPSTREAM),
        Stage.COMING_BACK,
        facts(proc("STARTING", pid=NEW)),
        Stage.COMING_BACK,
        [],
    ),
    # SafeStop -----------------------------------------------------------------------
    Row(
        "stop: already down",
        SafeStop("a", ProgramKind.TF_AGENT),
        "new",
        facts(proc("STOPPED")),
        Stage.DOWN,
        [],
    ),
    Row(
        "stop: tf-agent is held",
        SafeStop("a", ProgramKind.TF_AGENT),
        "new",
        facts(proc(), busy()),
        Stage.STOPPING,
        [(ops.SET_DRAIN, "hold")],
    ),
    Row(
        "stop: upstream is asked by signal",
        SafeStop("a", ProgramKind.UPSTREAM),
        "new",
        facts(proc()),
        Stage.STOPPING,
        [(ops.ASK_SIGNAL, "")],
    ),
    Row(
        "stop: the server waits for the next step",
        SafeStop("a", ProgramKind.SERVER),
        "new",
        facts(proc()),
        Stage.DOWN_PENDING,
        [],
    ),
    Row(
        "stop: down is done",
        SafeStop("a", ProgramKind.TF_AGENT),
        Stage.DOWN,
        facts(proc("EXITED")),
        Stage.DONE,
        [],
        "stopped after",
    ),
    Row(
        "stop: the server is stopped",
        SafeStop("a", ProgramKind.SERVER),
        Stage.DOWN_PENDING,
        facts(proc()),
        Stage.DONE,
        [(ops.STOP, "")],
    ),
    Row(
        "stop: busy waits",
        SafeStop("a", ProgramKind.TF_AGENT),
        Stage.STOPPING,
        facts(proc(), busy()),
        Stage.STOPPING,
        [],
        "waiting for job j-1",
        extra={"on_job": True},
    ),
    Row(
        "stop: idle is exiting",
        SafeStop("a", ProgramKind.TF_AGENT),
        Stage.STOPPING,
        facts(proc(), idle()),
        Stage.STOPPING,
        [],
        "idle; exiting",
    ),
    Row(
        "stop: exited 0 is done, nothing to stop",
        SafeStop("a", ProgramKind.TF_AGENT),
        Stage.STOPPING,
        facts(proc("EXITED")),
        Stage.DONE,
        [],
    ),
    Row(
        "stop: upstream respawned is stopped before it polls",
        SafeStop("a", ProgramKind.UPSTREAM),
        Stage.STOPPING,
        facts(proc("STARTING", pid=NEW)),
        Stage.DONE,
        [(ops.STOP, "")],
    ),
    # Replace ------------------------------------------------------------------------
    Row(
        "replace: tf-agent is held first",
        Replace("a", ProgramKind.TF_AGENT),
        "new",
        facts(proc(), idle()),
        Stage.STOPPING,
        [(ops.SET_DRAIN, "hold")],
    ),
    Row(
        "replace: busy waits",
        Replace("a", ProgramKind.TF_AGENT),
        Stage.STOPPING,
        facts(proc(), busy()),
        Stage.STOPPING,
        [],
        "waiting for job",
    ),
    Row(
        "replace: exited, the program is swapped",
        Replace("a", ProgramKind.TF_AGENT),
        Stage.STOPPING,
        facts(proc("EXITED")),
        Stage.COMING_BACK,
        [(ops.SWAP_PROGRAM, "")],
        "swapping",
    ),
    Row(
        "replace: upstream respawned is stopped, then swapped keeping a drain",
        Replace("a", ProgramKind.UPSTREAM),
        Stage.STOPPING,
        facts(proc(pid=NEW)),
        Stage.COMING_BACK,
        [(ops.STOP, ""), (ops.SWAP_PROGRAM, ops.KEEP_DRAIN)],
        extra={"old_pid": NEW},
    ),
    Row(
        "replace: the server is stopped and swapped",
        Replace("a", ProgramKind.SERVER),
        Stage.DOWN_PENDING,
        facts(proc()),
        Stage.COMING_BACK,
        [(ops.STOP, ""), (ops.SWAP_PROGRAM, "")],
    ),
    Row(
        "replace: not running is swapped at once",
        Replace("a", ProgramKind.TF_AGENT),
        Stage.DOWN,
        facts(proc("FATAL")),
        Stage.COMING_BACK,
        [(ops.SWAP_PROGRAM, "")],
    ),
    Row(
        "replace: the new program polled",
        Replace("a", ProgramKind.TF_AGENT),
        Stage.COMING_BACK,
        facts(proc(pid=NEW), idle(NEW, NOW)),
        Stage.DONE,
        [],
        "back in",
    ),
    Row(
        "replace: the new program failed",
        Replace("a", ProgramKind.TF_AGENT),
        Stage.COMING_BACK,
        facts(proc("FATAL")),
        Stage.FAILED,
        [],
        "did not come back",
    ),
    # Remove -------------------------------------------------------------------------
    Row(
        "remove: busy waits",
        Remove("a", ProgramKind.TF_AGENT),
        Stage.STOPPING,
        facts(proc(), busy()),
        Stage.STOPPING,
        [],
    ),
    Row(
        "remove: exited, the program and files go",
        Remove("a", ProgramKind.TF_AGENT),
        Stage.STOPPING,
        facts(proc("EXITED")),
        Stage.DONE,
        [(ops.REMOVE_PROGRAM, ""), (ops.TELL_REMOVED, "")],
        "removed after",
    ),
    Row(
        "remove: not loaded, the files go",
        Remove("a", ProgramKind.TF_AGENT),
        Stage.DOWN,
        facts(),
        Stage.DONE,
        [(ops.REMOVE_PROGRAM, "")],
        server_known=False,
    ),
    Row(
        "remove: BACKOFF is stopped and removed",
        Remove("a", ProgramKind.TF_AGENT),
        Stage.DOWN,
        facts(proc("BACKOFF")),
        Stage.DONE,
        [(ops.STOP, ""), (ops.REMOVE_PROGRAM, ""), (ops.TELL_REMOVED, "")],
    ),
    # Drain ------------------------------------------------------------------------
    Row(
        "drain: tf-agent gets the flag",
        Drain("a", ProgramKind.TF_AGENT),
        "new",
        facts(proc(), idle()),
        Stage.DRAINING,
        [(ops.SET_DRAIN, "drain")],
    ),
    Row(
        "drain: upstream is set offline on its server, its gate's flag set",
        Drain("a", ProgramKind.UPSTREAM),
        "new",
        facts(proc()),
        Stage.DRAINING,
        [(ops.SET_DRAIN, "drain"), (ops.SERVER_STATE, "offline")],
    ),
    Row(
        "drain: upstream without a server cannot be drained",
        Drain("a", ProgramKind.UPSTREAM),
        "new",
        facts(proc()),
        Stage.FAILED,
        [],
        "only be drained through its server",
        server_known=False,
    ),
    Row(
        "drain: busy waits",
        Drain("a", ProgramKind.TF_AGENT),
        Stage.DRAINING,
        facts(proc(), busy()),
        Stage.DRAINING,
        [],
        "waiting for job",
        extra={"on_job": True},
    ),
    Row(
        "drain: idle but not yet drained",
        Drain("a", ProgramKind.TF_AGENT),
        Stage.DRAINING,
        facts(proc(), idle()),
        Stage.DRAINING,
        [],
        Stage.DRAINING,
    ),
    Row(
        "drain: drained is done",
        Drain("a", ProgramKind.TF_AGENT),
        Stage.DRAINING,
        facts(proc(), idle(state="drained")),
        Stage.DONE,
        [],
        "idle after",
    ),
    Row(
        "drain: an idle upstream is done",
        Drain("a", ProgramKind.UPSTREAM),
        Stage.DRAINING,
        facts(proc()),
        Stage.DONE,
        [],
    ),
    Row(
        "drain: not running is done",
        Drain("a", ProgramKind.TF_AGENT),
        Stage.DRAINING,
        facts(proc("EXITED")),
        Stage.DONE,
        [],
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.label for r in ROWS])
def test_transition(row: Row) -> None:
    op = row.op
    snap = Snapshot({"a": row.facts}, NOW, server_known=row.server_known)
    if row.stage == "new":
        actions = op.begin(snap)
    else:
        op.stage, op.old_pid, op.started_at = row.stage, OLD, NOW - 10
        actions = op.step(snap)
    assert op.stage == row.next_stage, op.text
    assert [(a.verb, a.arg) for a in actions] == row.actions
    assert all(a.name == "a" for a in actions)
    if row.text is not None:
        assert row.text in op.text
    for key, value in row.extra.items():
        assert getattr(op, key) == value, key


def test_every_stage_of_every_operation_has_a_row() -> None:
    """A new stage or operation cannot be added without rows for it."""
    covered = {(type(r.op), r.stage) for r in ROWS} | {(type(r.op), r.next_stage) for r in ROWS}
    for cls, stages in {
        SafeRestart: {"new", "settling", "asked", "coming-back"},
        SafeStop: {"new", "stopping", "down-pending", "down"},
        Replace: {"new", "stopping", "down-pending", "down", "coming-back"},
        Remove: {"stopping", "down"},
        Drain: {"new", "draining"},
    }.items():
        assert stages <= covered_stages(covered, cls), cls.__name__


def covered_stages(covered: set[tuple[type, str]], cls: type) -> set[str]:
    return {stage for c, stage in covered if c is cls}


STALE = NOW - STATUS_STALE_SECONDS - 1


@pytest.mark.parametrize(
    ("kind", "agent", "expected"),
    [
        (ProgramKind.TF_AGENT, facts(), (False, "not loaded")),
        (ProgramKind.TF_AGENT, facts(proc("EXITED")), (False, "exited")),
        (ProgramKind.TF_AGENT, facts(proc("EXITED"), busy(), STALE), (False, "exited")),
        (ProgramKind.TF_AGENT, facts(proc(), idle()), (False, "waiting")),
        (
            ProgramKind.TF_AGENT,
            facts(proc(), {"pid": OLD, "state": "cleanup"}),
            (True, "phase cleanup"),
        ),
        (ProgramKind.TF_AGENT, facts(proc(), busy()), (True, "waiting for job j-1 in phase test")),
        # Unknown is busy: no file, another pid's, a stale one, a malformed one.
        (ProgramKind.TF_AGENT, facts(proc()), (True, "not known to be idle (status file missing)")),
        (
            ProgramKind.TF_AGENT,
            facts(proc(), idle(pid=OLD + 1)),
            (True, f"written by pid {OLD + 1}, not by the running pid {OLD}"),
        ),
        (
            ProgramKind.TF_AGENT,
            facts(proc(), idle(), STALE),
            (True, "status file not written since"),
        ),
        (
            ProgramKind.TF_AGENT,
            AgentFacts(proc(), StatusRead(None, STALE, "not JSON", disk_full=True)),
            (True, "status file not JSON: its filesystem is full"),
        ),
        (ProgramKind.TF_AGENT, facts(proc(), children=2), (True, "it has 2 child process(es)")),
        # ... and from the first second, whatever the file says, when it is contradicted:
        # its writer cannot write it now, or a phase runs below an agent it calls idle.
        (
            ProgramKind.TF_AGENT,
            AgentFacts(proc(), StatusRead(idle(), NOW - 1, unwritable="its filesystem is full")),
            (True, "status file cannot be written now: its filesystem is full"),
        ),
        (
            ProgramKind.TF_AGENT,
            facts(proc(), idle(), children=1),
            (True, "its status file says waiting, but it has 1 child process(es)"),
        ),
        (ProgramKind.TF_AGENT, facts(proc(), idle()), (False, "waiting")),
        (
            ProgramKind.TF_AGENT,
            facts(proc(), server_job="j-7"),
            (True, "the server says it runs job j-7"),
        ),
        (ProgramKind.UPSTREAM, facts(proc()), (False, "idle")),
        (ProgramKind.UPSTREAM, facts(proc(), children=1), (True, "1 child process(es)")),
        (
            ProgramKind.UPSTREAM,
            facts(proc(), server_job="j"),
            (True, "job j (as the server reports it)"),
        ),
    ],
)
def test_busy(kind, agent, expected) -> None:
    is_busy, text = Snapshot({"a": agent}, NOW).busy("a", kind)
    assert is_busy == expected[0]
    assert expected[1] in text


def test_the_run_result_counts_only_finished_operations() -> None:
    from multiagent.fleet.model.operations import RunResult

    snap = Snapshot({}, NOW)
    done, failed = Drain("a", ProgramKind.TF_AGENT), Drain("b", ProgramKind.TF_AGENT)
    done.begin(snap)
    done.finish(snap, "idle")
    failed.fail("no", NOW)
    result = RunResult([done, failed])
    assert not result.ok
    data = result.to_json()
    assert [a["stage"] for a in data["agents"]] == ["done", "failed"]
    assert data["agents"][1]["error"] == "no"
    assert RunResult([done]).ok and not RunResult([done], timed_out=True).ok
