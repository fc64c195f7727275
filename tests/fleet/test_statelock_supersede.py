"""A forced command's request to take over the state dir: only a live requester counts,
so a request left by a killed `down --force` never stops a later safe operation."""

from __future__ import annotations

import os
import subprocess

from multiagent.fleet.host.statelock import SUPERSEDE_NAME, superseded_by
from multiagent.fleet.model.layout import Layout


def test_only_a_live_forced_command_supersedes(tmp_path):
    layout = Layout(tmp_path)
    request = tmp_path / SUPERSEDE_NAME
    assert superseded_by(layout) is None
    dead = subprocess.Popen(["true"])
    dead.wait()
    request.write_text(f"pid {dead.pid} (tf-fleet down --force)")
    assert superseded_by(layout) is None
    request.write_text(f"pid {os.getpid()} (tf-fleet down --force)")
    assert superseded_by(layout) == f"pid {os.getpid()} (tf-fleet down --force)"


def test_a_waiting_command_says_whom_it_waits_for_and_how_long_so_far(tmp_path):
    import threading
    import time

    from multiagent.fleet.host.statelock import exclusive

    layout = Layout(tmp_path)
    said: list[str] = []
    release = threading.Event()

    def holder() -> None:
        with exclusive(layout, "up"):
            release.wait(30)

    first = threading.Thread(target=holder)
    first.start()
    deadline = time.monotonic() + 30
    while not (tmp_path / "tf-fleet.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.01)

    def waiter() -> None:
        with exclusive(layout, "drain", say=said.append, every=0.2):
            pass

    second = threading.Thread(target=waiter)
    second.start()
    while not any("so far" in line for line in said) and time.monotonic() < deadline:
        time.sleep(0.05)
    release.set()
    first.join(30)
    second.join(30)
    assert said[0].startswith(f"waiting for pid {os.getpid()} (tf-fleet up) to finish")
    assert any(line.endswith("s so far)") for line in said), said
