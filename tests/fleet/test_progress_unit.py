"""No silent waits: progress lines on a log, and what Ctrl-C says."""

from __future__ import annotations

import io

from multiagent.fleet.model.fleetfile import ProgramKind
from multiagent.fleet.model.operations import SafeRestart, Snapshot
from multiagent.fleet.reconcile.progress import REPEAT_SECONDS, Progress
from multiagent.fleet.reconcile.scheduler import Interrupted


def test_a_log_gets_a_line_per_change_and_a_reminder_for_what_is_pending():
    clock = [1000.0]
    out = io.StringIO()
    progress = Progress(out, live=False, clock=lambda: clock[0])
    op = SafeRestart("a1", ProgramKind.TF_AGENT, "signal")
    op.begin(Snapshot({}, 1000.0))
    op.text = "waiting for job j-1 in phase test"
    progress([op])
    progress([op])  # nothing new, too soon: no line
    clock[0] += REPEAT_SECONDS
    progress([op])  # still pending a minute later: said again
    op.finish(Snapshot({}, 1100.0), "back in 100.0s")
    progress([op])
    clock[0] += REPEAT_SECONDS
    progress([op])  # done: not repeated
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "a1: waiting for job j-1 in phase test",
        "a1: waiting for job j-1 in phase test",
        "a1: back in 100.0s",
    ]


def test_interrupted_names_what_is_pending_and_that_nothing_was_interrupted():
    asked = SafeRestart("a1", ProgramKind.TF_AGENT, "signal")
    asked.begin(Snapshot({}, 1.0))
    asked.text = "waiting for job j-1 in phase test"
    queued = SafeRestart("a2", ProgramKind.TF_AGENT, "signal")
    error = Interrupted([asked, queued])
    assert error.exit_status == 130
    lines = error.lines()
    assert "no job was interrupted" in lines[0]
    assert lines[1] == (
        "  still pending: a1: waiting for job j-1 in phase test (already asked: it goes on"
        " by itself)"
    )
    assert lines[2] == "  still pending: a2: queued"


def test_many_operations_make_one_line_of_counts_and_a_failure_is_said_once_on_stderr():
    clock = [1000.0]
    out, err = io.StringIO(), io.StringIO()
    progress = Progress(out, live=False, clock=lambda: clock[0], err=err)
    ops = [SafeRestart(f"a{i:02}", ProgramKind.TF_AGENT, "signal") for i in range(12)]
    for op in ops:
        op.begin(Snapshot({}, 1000.0))
        op.stage = "asked"
    progress(ops)
    ops[0].fail("did not come back", 1001.0)
    progress(ops)
    progress(ops)  # nothing new: no line
    clock[0] += REPEAT_SECONDS
    progress(ops)  # still pending: said again
    assert [line.split(" (")[0] for line in out.getvalue().splitlines()] == [
        "12 agents: 12 asked",
        "12 agents: 11 asked, 1 failed",
        "12 agents: 11 asked, 1 failed",
    ]
    assert err.getvalue() == "a00: FAILED: did not come back\n"
    verbose = io.StringIO()
    Progress(verbose, live=False, err=io.StringIO(), verbose=True)(ops)
    assert len(verbose.getvalue().splitlines()) == 11  # one per agent; the failure on err


def test_lines_summarise_a_large_fleet_unless_verbose():
    from pathlib import Path

    from multiagent.fleet.messages import Lines

    out = io.StringIO()
    names = [f"dut-{i:03}" for i in range(200)]
    Lines(out=out).started([*names, "tf-fleet-server"], 3.14, "tf-fleet-server")
    Lines(out=out).wrote([Path(f"/s/agents/{n}/a.conf") for n in names])
    Lines(out=out).started(["dut-1"], 0.1, "tf-fleet-server")
    assert out.getvalue().splitlines() == [
        "started 200 agents (and the server, tf-fleet-server) in 3.1 s",
        "wrote 200 files under /s/agents",
        "started dut-1",
    ]
    every = io.StringIO()
    Lines(verbose=True, out=every).started(names, 1.0)
    assert len(every.getvalue().splitlines()) == 200


def test_times_are_utc_with_the_zone_unless_local(monkeypatch):
    import time

    from multiagent.fleet.messages import clock, use_local_time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert clock(0.0) == "00:00:00 UTC"
        use_local_time(True)
        assert clock(0.0) == "09:00:00 JST"
    finally:
        use_local_time(False)
        monkeypatch.delenv("TZ")
        time.tzset()
