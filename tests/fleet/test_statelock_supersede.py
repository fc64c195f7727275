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
