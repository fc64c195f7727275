"""Waiting on many pids (multiagent/fleet/host/orphans.py), against real processes."""

from __future__ import annotations

import subprocess

from multiagent.fleet.host.orphans import alive, from_first_running


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "30"])


def test_from_first_running_drops_only_the_ended_ones_in_front():
    first, second, third = _sleeper(), _sleeper(), _sleeper()
    pids = [first.pid, second.pid, third.pid]
    try:
        assert from_first_running(pids) == pids
        second.kill()
        second.wait()
        # An ended pid behind a running one is kept until those in front have ended.
        assert from_first_running(pids) == pids
        assert alive(pids) == [first.pid, third.pid]
        first.kill()
        first.wait()
        assert from_first_running(pids) == [third.pid]
    finally:
        for proc in (first, second, third):
            proc.kill()
            proc.wait()
    assert from_first_running(pids) == []
