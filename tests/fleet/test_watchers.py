"""`submit --wait` processes found by their command line and environment
(multiagent/fleet/host/watchers.py), against real processes."""

from __future__ import annotations

import os
import subprocess
import sys

from multiagent.fleet.host.watchers import DEFAULT_SERVER, watchers

# Sleeps until its stdin closes; its command line reads as `... tf-fleet submit ... --wait`.
FOLLOWER = "import sys; print('up', flush=True); sys.stdin.read()"


def _follower(*args: str, server_env: str | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "TESTFLINGER_SERVER"}
    if server_env:
        env["TESTFLINGER_SERVER"] = server_env
    proc = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, "tf-fleet", "submit", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    return proc


def _end(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        proc.communicate()


def test_the_server_comes_from_the_option_then_the_environment_then_the_default():
    by_option = _follower("a.yaml", "--server", "http://127.0.0.1:18111", "--wait")
    by_env = _follower("b.yaml", "--wait", server_env="http://localhost:18112")
    by_default = _follower("c.yaml", "--wait")
    not_waiting = _follower("d.yaml", server_env="http://127.0.0.1:18112")
    try:
        assert [(w.pid, w.job_file) for w in watchers("http://localhost:18111")] == [
            (by_option.pid, "a.yaml")
        ]
        assert [(w.pid, w.job_file) for w in watchers("http://127.0.0.1:18112")] == [
            (by_env.pid, "b.yaml")
        ]
        found = [w for w in watchers(DEFAULT_SERVER) if w.pid == by_default.pid]
        assert [w.text() for w in found] == [
            f"pid {by_default.pid} (tf-fleet submit c.yaml --wait)"
        ]
    finally:
        _end(by_option, by_env, by_default, not_waiting)
    assert watchers("http://127.0.0.1:18112") == []  # gone
