"""The pure parts of trusted roll-outs: a crash read from a tf-agent's log, the digest
that names a change, and the record of a rejected one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from multiagent.fleet.host import rejected
from multiagent.fleet.host.logs import ended_unannounced
from multiagent.fleet.host.rendered import rendering_digest
from multiagent.fleet.model.fleetfile import parse_fleet
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.render import Program, Rendering

AGENT = "    job_queues: [q]\n"
START = "2026-12-06 06:00:0{} INFO tf-agent: tf-agent 0.1.0 starting as a1 (pid {})"
EXIT = "2026-12-06 06:00:0{} INFO tf-agent: exiting with status {}"


def test_a_predecessor_that_never_logged_its_exit_crashed():
    crashed = [START.format(1, 10), "working", START.format(5, 11)]
    assert ended_unannounced(crashed, 11)
    clean = [START.format(1, 10), EXIT.format(4, 1), START.format(5, 11)]
    assert not ended_unannounced(clean, 11)
    # The running pid has not logged yet: the last process in the log is gone, and said
    # nothing as it went (or said it exited).
    assert ended_unannounced(crashed, 12)
    assert not ended_unannounced([*clean, EXIT.format(6, 0)], 12)
    # The log cannot tell: no predecessor in view.
    assert not ended_unannounced([START.format(5, 11)], 11)
    assert not ended_unannounced([], 11)
    # pid 1 is not pid 11
    assert not ended_unannounced([START.format(1, 11), START.format(5, 1)], 11)


def _rendering(text: str) -> Rendering:
    program = Program("a1", Path("/s/conf.d/a1.conf"), "[program:a1]\n", {Path("/c"): text})
    return Rendering(None, {"a1": program})


def test_the_same_rendering_has_the_same_digest_and_a_change_another():
    assert rendering_digest(_rendering("x")) == rendering_digest(_rendering("x"))
    assert rendering_digest(_rendering("x")) != rendering_digest(_rendering("y"))
    conf = (Path("/s/supervisord.conf"), "[supervisord]\n")
    same = Rendering(conf, _rendering("x").programs)
    assert rendering_digest(same) == rendering_digest(_rendering("x"))  # agents' files only


def test_a_rejection_is_kept_privately_and_an_unreadable_record_is_none(tmp_path):
    layout = Layout(tmp_path)
    assert rejected.read(layout) is None
    rejection = rejected.Rejection("d" * 64, 1_700_000_000.0, ("a1",), "a1: exited")
    rejected.record(layout, rejection)
    assert rejected.read(layout) == rejection
    assert layout.rejected_change.stat().st_mode & 0o777 == 0o600
    assert "by its canary a1: a1: exited" in rejection.line()
    layout.rejected_change.write_text("{not json")
    assert rejected.read(layout) is None
    rejected.clear(layout)
    assert not layout.rejected_change.exists()


def test_the_canary_soak_is_30s_unless_the_fleet_file_or_the_command_says():
    plain = parse_fleet("agents:\n  a1:\n" + "    job_queues: [q]\n", Path("/lab/fleet.yaml"))
    assert plain.restart.canary_soak == 30
    short = parse_fleet(
        "restart: {canary_soak: 2m}\nagents:\n  a1:\n" + "    job_queues: [q]\n",
        Path("/lab/fleet.yaml"),
    )
    assert short.restart.canary_soak == 120
    alone = subprocess.run(
        [
            sys.executable,
            "-m",
            "multiagent",
            "-c",
            "/nonexistent.yaml",
            "up",
            "--canary-soak",
            "5s",
        ],
        capture_output=True,
        text=True,
    )
    assert alone.returncode == 2 and "--canary-soak go with --canary N" in alone.stderr
