"""Process facts read from /proc (multiagent/procinfo.py), against real processes."""

from __future__ import annotations

import os
import subprocess
import time

from multiagent.fleet.host.procinfo import is_running, process_start_time


def test_running_exited_and_gone_pids():
    sleeper = subprocess.Popen(["sleep", "30"])
    quick = subprocess.Popen(["true"])
    try:
        assert is_running(sleeper.pid)
        # `true` exits at once; until it is reaped it is a zombie: not running.
        deadline = time.monotonic() + 10
        while is_running(quick.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not is_running(quick.pid)
        assert os.path.exists(f"/proc/{quick.pid}")  # still there, as a zombie
    finally:
        sleeper.kill()
        sleeper.wait()
        quick.wait()
    assert not is_running(sleeper.pid)  # reaped: gone from /proc
    assert process_start_time(sleeper.pid) is None


def test_start_time_is_precise():
    before = time.time()
    child = subprocess.Popen(["sleep", "30"])
    try:
        started = process_start_time(child.pid)
        assert started is not None
        assert before - 0.05 <= started <= time.time() + 0.05
    finally:
        child.kill()
        child.wait()
