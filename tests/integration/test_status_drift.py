"""`status` tells when the host and the fleet file disagree, with the command that puts
it right, and exits 1. Real supervisord, the embedded server, tf-agents."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import yaml
from fixtures_fleet import wait_until


def test_status_with_an_older_fleet_file_names_what_differs(fleet_env):
    fleet_env.start(fleet_env.agent_fleet(["dr1", "dr2"]))
    older = fleet_env.agent_fleet(["dr1", "dr3"])
    older["state_dir"] = str(fleet_env.state_dir)
    old_file = fleet_env.root / "older.yaml"
    old_file.write_text(yaml.safe_dump(older))
    out = fleet_env.run("status", check=False)
    assert out.returncode == 0, out.stdout  # the fleet file in use: no drift
    assert "drift" not in out.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "multiagent", "-c", str(old_file), "status"],
        capture_output=True,
        text=True,
        cwd=fleet_env.root,
        timeout=60,
    )
    assert shown.returncode == 1, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert (
        "drift: running, but not in the fleet file: dr2; `tf-fleet plan` shows it;"
        " `tf-fleet up` applies it, each agent after its job"
    ) in lines
    assert any(line.startswith("drift: in the fleet file, but not loaded: dr3;") for line in lines)
    assert {n: r["process"] for n, r in fleet_env.status().items()} == {
        "dr1": "RUNNING",
        "dr2": "RUNNING",
    }


def test_status_after_supervisord_died_says_up_takes_the_agents_over(fleet_env):
    pids = fleet_env.start(fleet_env.agent_fleet(["sv1"]))
    old = fleet_env.supervisord_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(old), 10, "supervisord to die")
    shown = fleet_env.run("status", check=False)
    assert shown.returncode == 1
    drift = [line for line in shown.stdout.splitlines() if line.startswith("drift:")]
    assert len(drift) == 1, shown.stdout
    assert f"sv1 (pid {pids['sv1']})" in drift[0]
    assert drift[0].endswith("`tf-fleet up` starts supervisord and takes each over after its job")
    fleet_env.run("up")
    assert fleet_env.run("status").returncode == 0
    assert [p.pid for p in fleet_env.agent_processes("sv1")] != [pids["sv1"]]
