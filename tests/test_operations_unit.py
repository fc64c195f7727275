"""How safe operations tell a busy agent from an idle one, against real processes."""

from __future__ import annotations

import subprocess
import sys

import requests

from multiagent.operations import Snapshot
from multiagent.supervisor import ProcessInfo


def _info(pid: int) -> ProcessInfo:
    return ProcessInfo(
        name="u1",
        state="RUNNING",
        pid=pid,
        start=0.0,
        now=0.0,
        description="",
        spawnerr="",
        exitstatus=0,
        log_file="",
    )


def test_upstream_agent_between_phases_is_busy_by_the_servers_word(tf_server):
    agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        snap = Snapshot({"u1": _info(agent.pid)}, {}, 0.0, tf_server.url)
        assert snap.busy("u1", "upstream") == (False, "idle")  # no child, no job
        requests.post(f"{tf_server.url}/v1/agents/data/u1", json={"job_id": "j-1"}, timeout=5)
        from multiagent import operations

        operations._SERVER_CACHE.clear()
        busy, text = snap.busy("u1", "upstream")
        assert busy and "j-1" in text
    finally:
        agent.kill()
        agent.wait()


def test_tf_agent_status_file_of_an_older_process_is_not_trusted():
    snap = Snapshot(
        {"a1": _info(4242)}, {"a1": {"pid": 1111, "job_id": "old", "state": "test"}}, 0.0
    )
    assert snap.busy("a1", "tf-agent") == (False, "starting")
    snap = Snapshot(
        {"a1": _info(4242)},
        {"a1": {"pid": 4242, "job_id": "j", "state": "test", "phase": "test", "since": None}},
        0.0,
    )
    busy, text = snap.busy("a1", "tf-agent")
    assert busy and "job j in phase test" in text
