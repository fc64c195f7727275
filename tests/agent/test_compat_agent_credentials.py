"""tf-agent's client with the credential `tf-fleet server agent-token` writes, against a live
server that has clients: refresh, register, take a job, report; the shared token too."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import requests
from fixtures_server import LocalServer

from multiagent.agent.client import Client


def agent_token(db: Path, name: str, out: Path) -> str:
    cmd = [sys.executable, "-m", "multiagent", "server", "agent-token"]
    proc = subprocess.run(
        [*cmd, "--db", str(db), "--name", name, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_agent_token_file_works_for_tf_agent(tmp_path: Path):
    server = LocalServer(tmp_path / "lab.db", tmp_path / "lab.log")
    token_file = tmp_path / "agents" / "dut-1.token"
    assert agent_token(server.db_path, "dut-1", token_file).startswith("wrote")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert set(json.loads(token_file.read_text())) == {"refresh_token", "obtained_at"}
    # A second call with a valid file changes nothing (tf-fleet up may call it each time).
    before = token_file.read_text()
    assert agent_token(server.db_path, "dut-1", token_file).startswith("unchanged")
    assert token_file.read_text() == before
    server.start()
    try:
        assert "auth: clients" in (tmp_path / "lab.log").read_text()
        # Without the credential an agent is refused (upstream's 403), with it it works.
        anonymous = Client(server.url, "dut-1")
        assert not anonymous.post_agent_data({"state": "waiting"})
        agent = Client(server.url, "dut-1", token_file=str(token_file))
        assert agent.post_agent_data({"state": "waiting", "queues": ["lab"]})
        job_id = server.submit({"job_queue": "lab"})
        status, job = agent.poll_job(["lab"])
        assert status == 200 and job is not None and job["job_id"] == job_id
        assert agent.post_result(job_id, {"job_state": "complete", "status": {"test": 0}})
        assert server.job_state(job_id) == "complete"
        agent.close()
        anonymous.close()
    finally:
        server.stop()


def test_open_server_says_so_and_shared_token_still_works(tmp_path: Path):
    shared = tmp_path / "token"
    shared.write_text(json.dumps({"refresh_token": "s3cret-shared-token"}))
    server = LocalServer(tmp_path / "s.db", tmp_path / "s.log", ["--token-file", str(shared)])
    server.start()
    try:
        agent = Client(server.url, "dut-2", token_file=str(shared))
        assert agent.post_agent_data({"state": "waiting", "queues": ["lab"]})
        job_id = server.submit({"job_queue": "lab"})
        assert agent.poll_job(["lab"])[1]["job_id"] == job_id  # type: ignore[index]
        agent.close()
        anonymous = requests.post(f"{server.url}/v1/agents/data/x", json={}, timeout=5)
        assert anonymous.status_code == 403
    finally:
        server.stop()
    assert "auth: the shared token" in (tmp_path / "s.log").read_text()
    open_server = LocalServer(tmp_path / "o.db", tmp_path / "o.log")
    open_server.start()
    open_server.stop()
    assert "auth: none" in (tmp_path / "o.log").read_text()
