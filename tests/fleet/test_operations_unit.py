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
from multiagent.fleet.model.fleetfile import SERVER, TF_AGENT, UPSTREAM
from multiagent.fleet.model.operations import (
    AgentFacts,
    Drain,
    Operation,
    Remove,
    Replace,
    SafeRestart,
    SafeStop,
    Snapshot,
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


def restart(kind: str = TF_AGENT, method: str = "signal") -> SafeRestart:
    return SafeRestart("a", kind, method)


ROWS = [
    # SafeRestart.begin ------------------------------------------------------------
    Row(
        "restart: not loaded is started",
        restart(),
        "new",
        facts(),
        "coming-back",
        [(ops.START, "")],
    ),
    Row(
        "restart: STOPPED is started",
        restart(),
        "new",
        facts(proc("STOPPED")),
        "coming-back",
        [(ops.START, "")],
        "starting",
    ),
    Row(
        "restart: FATAL is started",
        restart(),
        "new",
        facts(proc("FATAL")),
        "coming-back",
        [(ops.START, "")],
    ),
    Row(
        "restart: STARTING waits to settle",
        restart(),
        "new",
        facts(proc("STARTING")),
        "settling",
        [],
        "finish starting",
    ),
    Row(
        "restart: RUNNING is asked by signal",
        restart(),
        "new",
        facts(proc(), idle()),
        "asked",
        [(ops.ASK_SIGNAL, "")],
        extra={"old_pid": OLD},
    ),
    Row(
        "restart: RUNNING is asked by file",
        restart(method="file"),
        "new",
        facts(proc(), idle()),
        "asked",
        [(ops.ASK_FILE, "")],
    ),
    Row(
        "restart: a busy agent is asked too (it finishes its job first)",
        restart(),
        "new",
        facts(proc(), busy()),
        "asked",
        [(ops.ASK_SIGNAL, "")],
    ),
    # SafeRestart settling ---------------------------------------------------------
    Row(
        "restart settling: RUNNING is asked",
        restart(),
        "settling",
        facts(proc(pid=NEW)),
        "asked",
        [(ops.ASK_SIGNAL, "")],
        extra={"old_pid": NEW},
    ),
    Row(
        "restart settling: still STARTING",
        restart(),
        "settling",
        facts(proc("STARTING")),
        "settling",
        [],
    ),
    Row(
        "restart settling: BACKOFF fails",
        restart(),
        "settling",
        facts(proc("BACKOFF")),
        "failed",
        [],
        "did not start (BACKOFF)",
    ),
    Row("restart settling: gone fails", restart(), "settling", facts(), "failed", [], "not loaded"),
    # SafeRestart asked --------------------------------------------------------------
    Row(
        "restart asked: busy tf-agent waits for its job",
        restart(),
        "asked",
        facts(proc(), busy()),
        "asked",
        [],
        "waiting for job j-1 in phase test",
        extra={"on_job": True},
    ),
    Row(
        "restart asked: idle tf-agent is about to exit",
        restart(),
        "asked",
        facts(proc(), idle()),
        "asked",
        [],
        "asked; restarting",
        extra={"on_job": False},
    ),
    Row(
        "restart asked: exited 1 is started at once",
        restart(),
        "asked",
        facts(proc("EXITED", exitstatus=1)),
        "coming-back",
        [(ops.START, "")],
        "restarting",
    ),
    Row(
        "restart asked: respawned and polled is back",
        restart(),
        "asked",
        facts(proc(pid=NEW), idle(NEW, NOW - 1)),
        "done",
        [],
        "back in",
        extra={"new_pid": NEW},
    ),
    Row(
        "restart asked: respawned, not polled yet",
        restart(),
        "asked",
        facts(proc("STARTING", pid=NEW)),
        "coming-back",
        [],
        "waiting for its first poll",
    ),
    Row(
        "restart asked: upstream with children is busy",
        restart(UPSTREAM),
        "asked",
        facts(proc(), children=2),
        "asked",
        [],
        "2 child process(es)",
        extra={"on_job": True},
    ),
    Row(
        "restart asked: upstream between phases is busy by the server's word",
        restart(UPSTREAM),
        "asked",
        facts(proc(), server_job="j-9"),
        "asked",
        [],
        "job j-9",
        extra={"on_job": True},
    ),
    Row(
        "restart asked: idle upstream",
        restart(UPSTREAM),
        "asked",
        facts(proc()),
        "asked",
        [],
        "asked; restarting",
    ),
    # SafeRestart coming-back ------------------------------------------------------
    Row(
        "back: a poll after the start",
        restart(),
        "coming-back",
        facts(proc(pid=NEW), idle(NEW, STARTED + 0.5)),
        "done",
        [],
        f"{OLD} -> {NEW}",
    ),
    Row(
        "back: a poll within the clock slack of the start",
        restart(),
        "coming-back",
        facts(proc(pid=NEW), idle(NEW, STARTED - 0.01)),
        "done",
        [],
    ),
    Row(
        "back: the last poll predates the process",
        restart(),
        "coming-back",
        facts(proc(pid=NEW), idle(NEW, STARTED - 3)),
        "coming-back",
        [],
        f"restarted (pid {NEW}); waiting for its first poll",
    ),
    Row(
        "back: a new process whose status file is not written says so",
        restart(),
        "coming-back",
        facts(proc(pid=NEW), idle(NEW, NOW), NOW - 3600),
        "coming-back",
        [],
        f"restarted (pid {NEW}); not known to have polled: status file not written since",
    ),
    Row(
        "back: a status file of the old process is not trusted",
        restart(),
        "coming-back",
        facts(proc(pid=NEW), idle(OLD, NOW)),
        "coming-back",
        [],
    ),
    Row(
        "back: drained and not polling counts as back",
        restart(),
        "coming-back",
        facts(proc(pid=NEW), idle(NEW, None, "drained")),
        "done",
        [],
    ),
    Row(
        "back: the old pid again is not back",
        restart(),
        "coming-back",
        facts(proc(pid=OLD), idle(OLD, NOW)),
        "coming-back",
        [],
    ),
    Row(
        "back: FATAL fails with its log and spawn error",
        restart(),
        "coming-back",
        facts(proc("FATAL", spawnerr="Exited too quickly"), log_tail=("boom", "bad config")),
        "failed",
        [],
        "did not come back (FATAL, Exited too quickly); log: boom | bad config",
    ),
    Row(
        "back: BACKOFF fails",
        restart(),
        "coming-back",
        facts(proc("BACKOFF", pid=NEW)),
        "failed",
        [],
        "BACKOFF",
    ),
    Row(
        "back: EXITED 0 (told to stay down) fails",
        restart(),
        "coming-back",
        facts(proc("EXITED", exitstatus=0)),
        "failed",
        [],
        "EXITED",
    ),
    Row(
        "back: EXITED 1 is between exit and respawn",
        restart(),
        "coming-back",
        facts(proc("EXITED", exitstatus=1)),
        "coming-back",
        [],
    ),
    Row(
        "back: STOPPED by someone fails",
        restart(),
        "coming-back",
        facts(proc("STOPPED")),
        "failed",
        [],
        "STOPPED",
    ),
    Row("back: unloaded fails", restart(), "coming-back", facts(), "failed", [], "no longer knows"),
    Row(
        "back: upstream RUNNING is back",
        restart(UPSTREAM),
        "coming-back",
        facts(proc(pid=NEW)),
        "done",
        [],
    ),
    Row(
        "back: upstream STARTING is not back yet",
        restart(UPSTREAM),
        "coming-back",
        facts(proc("STARTING", pid=NEW)),
        "coming-back",
        [],
    ),
    # SafeStop -----------------------------------------------------------------------
    Row("stop: already down", SafeStop("a", TF_AGENT), "new", facts(proc("STOPPED")), "down", []),
    Row(
        "stop: tf-agent is held",
        SafeStop("a", TF_AGENT),
        "new",
        facts(proc(), busy()),
        "stopping",
        [(ops.SET_DRAIN, "hold")],
    ),
    Row(
        "stop: upstream is asked by signal",
        SafeStop("a", UPSTREAM),
        "new",
        facts(proc()),
        "stopping",
        [(ops.ASK_SIGNAL, "")],
    ),
    Row(
        "stop: the server waits for the next step",
        SafeStop("a", SERVER),
        "new",
        facts(proc()),
        "down-pending",
        [],
    ),
    Row(
        "stop: down is done",
        SafeStop("a", TF_AGENT),
        "down",
        facts(proc("EXITED")),
        "done",
        [],
        "stopped after",
    ),
    Row(
        "stop: the server is stopped",
        SafeStop("a", SERVER),
        "down-pending",
        facts(proc()),
        "done",
        [(ops.STOP, "")],
    ),
    Row(
        "stop: busy waits",
        SafeStop("a", TF_AGENT),
        "stopping",
        facts(proc(), busy()),
        "stopping",
        [],
        "waiting for job j-1",
        extra={"on_job": True},
    ),
    Row(
        "stop: idle is exiting",
        SafeStop("a", TF_AGENT),
        "stopping",
        facts(proc(), idle()),
        "stopping",
        [],
        "idle; exiting",
    ),
    Row(
        "stop: exited 0 is done, nothing to stop",
        SafeStop("a", TF_AGENT),
        "stopping",
        facts(proc("EXITED")),
        "done",
        [],
    ),
    Row(
        "stop: upstream respawned is stopped before it polls",
        SafeStop("a", UPSTREAM),
        "stopping",
        facts(proc("STARTING", pid=NEW)),
        "done",
        [(ops.STOP, "")],
    ),
    # Replace ------------------------------------------------------------------------
    Row(
        "replace: tf-agent is held first",
        Replace("a", TF_AGENT),
        "new",
        facts(proc(), idle()),
        "stopping",
        [(ops.SET_DRAIN, "hold")],
    ),
    Row(
        "replace: busy waits",
        Replace("a", TF_AGENT),
        "stopping",
        facts(proc(), busy()),
        "stopping",
        [],
        "waiting for job",
    ),
    Row(
        "replace: exited, the program is swapped",
        Replace("a", TF_AGENT),
        "stopping",
        facts(proc("EXITED")),
        "coming-back",
        [(ops.SWAP_PROGRAM, "")],
        "swapping",
    ),
    Row(
        "replace: upstream respawned is stopped, then swapped",
        Replace("a", UPSTREAM),
        "stopping",
        facts(proc(pid=NEW)),
        "coming-back",
        [(ops.STOP, ""), (ops.SWAP_PROGRAM, "")],
        extra={"old_pid": NEW},
    ),
    Row(
        "replace: the server is stopped and swapped",
        Replace("a", SERVER),
        "down-pending",
        facts(proc()),
        "coming-back",
        [(ops.STOP, ""), (ops.SWAP_PROGRAM, "")],
    ),
    Row(
        "replace: not running is swapped at once",
        Replace("a", TF_AGENT),
        "down",
        facts(proc("FATAL")),
        "coming-back",
        [(ops.SWAP_PROGRAM, "")],
    ),
    Row(
        "replace: the new program polled",
        Replace("a", TF_AGENT),
        "coming-back",
        facts(proc(pid=NEW), idle(NEW, NOW)),
        "done",
        [],
        "back in",
    ),
    Row(
        "replace: the new program failed",
        Replace("a", TF_AGENT),
        "coming-back",
        facts(proc("FATAL")),
        "failed",
        [],
        "did not come back",
    ),
    # Remove -------------------------------------------------------------------------
    Row(
        "remove: busy waits",
        Remove("a", TF_AGENT),
        "stopping",
        facts(proc(), busy()),
        "stopping",
        [],
    ),
    Row(
        "remove: exited, the program and files go",
        Remove("a", TF_AGENT),
        "stopping",
        facts(proc("EXITED")),
        "done",
        [(ops.REMOVE_PROGRAM, "")],
        "removed after",
    ),
    Row(
        "remove: not loaded, the files go",
        Remove("a", TF_AGENT),
        "down",
        facts(),
        "done",
        [(ops.REMOVE_PROGRAM, "")],
    ),
    Row(
        "remove: BACKOFF is stopped and removed",
        Remove("a", TF_AGENT),
        "down",
        facts(proc("BACKOFF")),
        "done",
        [(ops.STOP, ""), (ops.REMOVE_PROGRAM, "")],
    ),
    # Drain ------------------------------------------------------------------------
    Row(
        "drain: tf-agent gets the flag",
        Drain("a", TF_AGENT),
        "new",
        facts(proc(), idle()),
        "draining",
        [(ops.SET_DRAIN, "drain")],
    ),
    Row(
        "drain: upstream is set offline on its server",
        Drain("a", UPSTREAM),
        "new",
        facts(proc()),
        "draining",
        [(ops.SERVER_STATE, "offline")],
    ),
    Row(
        "drain: upstream without a server cannot be drained",
        Drain("a", UPSTREAM),
        "new",
        facts(proc()),
        "failed",
        [],
        "only be drained through its server",
        server_known=False,
    ),
    Row(
        "drain: busy waits",
        Drain("a", TF_AGENT),
        "draining",
        facts(proc(), busy()),
        "draining",
        [],
        "waiting for job",
        extra={"on_job": True},
    ),
    Row(
        "drain: idle but not yet drained",
        Drain("a", TF_AGENT),
        "draining",
        facts(proc(), idle()),
        "draining",
        [],
        "draining",
    ),
    Row(
        "drain: drained is done",
        Drain("a", TF_AGENT),
        "draining",
        facts(proc(), idle(state="drained")),
        "done",
        [],
        "idle after",
    ),
    Row(
        "drain: an idle upstream is done",
        Drain("a", UPSTREAM),
        "draining",
        facts(proc()),
        "done",
        [],
    ),
    Row(
        "drain: not running is done",
        Drain("a", TF_AGENT),
        "draining",
        facts(proc("EXITED")),
        "done",
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
        (TF_AGENT, facts(), (False, "not loaded")),
        (TF_AGENT, facts(proc("EXITED")), (False, "exited")),
        (TF_AGENT, facts(proc("EXITED"), busy(), STALE), (False, "exited")),
        (TF_AGENT, facts(proc(), idle()), (False, "waiting")),
        (TF_AGENT, facts(proc(), {"pid": OLD, "state": "cleanup"}), (True, "phase cleanup")),
        (TF_AGENT, facts(proc(), busy()), (True, "waiting for job j-1 in phase test")),
        # Unknown is busy: no file, another pid's, a stale one, a malformed one.
        (TF_AGENT, facts(proc()), (True, "not known to be idle (status file missing)")),
        (
            TF_AGENT,
            facts(proc(), idle(pid=OLD + 1)),
            (True, f"written by pid {OLD + 1}, not by the running pid {OLD}"),
        ),
        (TF_AGENT, facts(proc(), idle(), STALE), (True, "status file not written since")),
        (
            TF_AGENT,
            AgentFacts(proc(), StatusRead(None, STALE, "not JSON", disk_full=True)),
            (True, "status file not JSON: its filesystem is full"),
        ),
        (TF_AGENT, facts(proc(), children=2), (True, "it has 2 child process(es)")),
        (TF_AGENT, facts(proc(), server_job="j-7"), (True, "the server says it runs job j-7")),
        (UPSTREAM, facts(proc()), (False, "idle")),
        (UPSTREAM, facts(proc(), children=1), (True, "1 child process(es)")),
        (UPSTREAM, facts(proc(), server_job="j"), (True, "job j (as the server reports it)")),
    ],
)
def test_busy(kind, agent, expected) -> None:
    is_busy, text = Snapshot({"a": agent}, NOW).busy("a", kind)
    assert is_busy == expected[0]
    assert expected[1] in text


def test_the_run_result_counts_only_finished_operations() -> None:
    from multiagent.fleet.model.operations import RunResult

    snap = Snapshot({}, NOW)
    done, failed = Drain("a", TF_AGENT), Drain("b", TF_AGENT)
    done.begin(snap)
    done.finish(snap, "idle")
    failed.fail("no", NOW)
    result = RunResult([done, failed])
    assert not result.ok
    data = result.to_json()
    assert [a["stage"] for a in data["agents"]] == ["done", "failed"]
    assert data["agents"][1]["error"] == "no"
    assert RunResult([done]).ok and not RunResult([done], timed_out=True).ok
