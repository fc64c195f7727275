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
