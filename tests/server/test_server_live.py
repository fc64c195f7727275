"""The real `python -m multiagent.server` (waitress + SQLite) on a loopback port."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import requests
from click.testing import CliRunner
from fixtures_server import LocalServer, free_port, tar_member

from multiagent.fleet.cli import submit_command


def agent_session(server: LocalServer, name: str, queues: list[str]) -> requests.Session:
    session = requests.Session()
    resp = session.post(
        f"{server.url}/v1/agents/data/{name}",
        json={"state": "waiting", "queues": queues},
        timeout=10,
    )
    assert resp.status_code == 200
    return session


def fragment(n: int, phase: str, text: str) -> dict:
    return {
        "fragment_number": n,
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "phase": phase,
        "log_data": text,
    }


def test_agent_flow_over_http(tf_server: LocalServer):
    url = tf_server.url
    job_id = tf_server.submit({"job_queue": "demo", "test_data": {"test_cmds": "echo hi"}})
    assert requests.get(f"{url}/v1/job", params={"queue": "demo"}, timeout=5).status_code == 401
    agent = agent_session(tf_server, "dev-1", ["demo"])
    assert agent.cookies.get("agent_name") == "dev-1"
    assert agent.get(f"{url}/v1/job", timeout=5).status_code == 400
    job = agent.get(f"{url}/v1/job", params={"queue": "demo"}, timeout=5).json()
    assert job["job_id"] == job_id and job["started_at"].endswith("Z")
    # The agent's first word names its job: the hand-out is acknowledged.
    ack = agent.post(f"{url}/v1/agents/data/dev-1", json={"job_id": job_id}, timeout=5)
    assert ack.status_code == 200
    assert agent.get(f"{url}/v1/job", params={"queue": "demo"}, timeout=5).status_code == 204
    agent.post(f"{url}/v1/result/{job_id}", json={"job_state": "test"}, timeout=5)
    resp = agent.post(
        f"{url}/v1/result/{job_id}/log/output", json=fragment(0, "test", "hi\n"), timeout=5
    )
    assert resp.status_code == 200
    assert agent.post(f"{url}/v1/result/{job_id}", json={"foo": 1}, timeout=5).status_code == 422
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("artifacts/hello.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    files = {"file": ("file", buf.getvalue(), "application/x-gzip")}
    assert agent.post(f"{url}/v1/result/{job_id}/artifact", files=files, timeout=5).ok
    agent.post(
        f"{url}/v1/result/{job_id}",
        json={"status": {"test": 0}, "job_state": "complete"},
        timeout=5,
    )
    assert tf_server.result(job_id) == {
        "test_status": 0,
        "test_output": "hi\n",
        "job_state": "complete",
    }
    assert tf_server.output(job_id) == "hi\n"
    assert requests.get(f"{url}/v1/result/{job_id}/artifact", timeout=5).content == buf.getvalue()
    bad = agent.post(f"{url}/v1/result/{job_id}/log/nope", json=fragment(1, "test", ""), timeout=5)
    assert bad.status_code == 404
    page = requests.get(f"{url}/agents", timeout=5).text
    assert '<a href="/agents/dev-1">dev-1</a>' in page and "just now" in page
    assert requests.get(f"{url}/jobs/{job_id}", timeout=5).status_code == 200


def test_twenty_pollers_never_share_a_job(tf_server: LocalServer):
    session = requests.Session()
    jobs = {
        session.post(f"{tf_server.url}/v1/job", json={"job_queue": "race"}, timeout=10).json()[
            "job_id"
        ]
        for _ in range(200)
    }
    assert len(jobs) == 200
    got: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def poller(i: int) -> None:
        agent = agent_session(tf_server, f"racer-{i}", ["race"])
        start.wait()
        mine = []
        while True:
            resp = agent.get(f"{tf_server.url}/v1/job", params={"queue": "race"}, timeout=30)
            if resp.status_code == 204:
                break
            assert resp.status_code == 200
            mine.append(resp.json()["job_id"])
            ack = {"job_id": mine[-1]}
            agent.post(f"{tf_server.url}/v1/agents/data/racer-{i}", json=ack, timeout=30)
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=poller, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    counts = Counter(got)
    assert set(counts) == jobs
    assert all(n == 1 for n in counts.values()), counts.most_common(3)


def test_data_survives_restart_and_sigterm_exits_zero(tf_server: LocalServer):
    agent_session(tf_server, "dev-1", ["demo"])
    job_id = tf_server.submit({"job_queue": "demo"})
    started = time.monotonic()
    tf_server.stop()
    assert tf_server.returncode == 0
    assert time.monotonic() - started < 5
    assert tf_server.db_path.exists()
    tf_server.start()
    assert tf_server.job_state(job_id) == "waiting"
    agents = requests.get(f"{tf_server.url}/v1/agents/data", timeout=5).json()
    assert [a["name"] for a in agents] == ["dev-1"]


def test_sigterm_while_agents_keep_connections_open(tf_server: LocalServer):
    sessions = [agent_session(tf_server, f"a{i}", ["q"]) for i in range(5)]
    assert all(s.cookies.get("agent_name") for s in sessions)  # keep-alive sockets stay open
    started = time.monotonic()
    tf_server.stop()
    assert tf_server.returncode == 0 and time.monotonic() - started < 5


def test_non_loopback_bind_needs_token_file(tmp_path: Path):
    cmd = [
        sys.executable,
        "-m",
        "multiagent.server",
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        "--db",
        str(tmp_path / "x.db"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "--token-file" in proc.stderr and "not loopback" in proc.stderr
    assert not (tmp_path / "x.db").exists()


def test_bad_agent_ttl_is_a_usage_error(tmp_path: Path):
    cmd = [
        sys.executable,
        "-m",
        "multiagent.server",
        "--agent-ttl",
        "7x",
        "--db",
        str(tmp_path / "x.db"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "--agent-ttl" in proc.stderr


def test_token_file_server(tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    server = LocalServer(
        tmp_path / "auth.db", tmp_path / "auth.log", ["--token-file", str(token_file)]
    )
    server.start()
    try:
        url = server.url
        body = {"state": "waiting"}
        # Upstream: a caller without a token has no agent role.
        assert requests.post(f"{url}/v1/agents/data/a1", json=body, timeout=5).status_code == 403
        token = requests.post(
            f"{url}/v1/oauth2/refresh", json={"refresh_token": "s3cret"}, timeout=5
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        resp = requests.post(f"{url}/v1/agents/data/a1", json=body, headers=auth, timeout=5)
        assert resp.status_code == 200
        # Reads need the token too once one is set; the health check does not.
        assert requests.get(f"{url}/v1/agents/data/a1", timeout=5).status_code == 401
        resp = requests.get(f"{url}/v1/agents/data/a1", headers=auth, timeout=5)
        assert resp.status_code == 200
        assert requests.get(f"{url}/v1", timeout=5).status_code == 200
    finally:
        server.stop()


def fake_agent(server: LocalServer, name: str, exit_status: int, stop: threading.Event) -> None:
    """Just enough of an agent: poll, post phases, output, status, artifact, complete."""
    agent = agent_session(server, name, ["demo"])
    url = server.url
    while not stop.is_set():
        resp = agent.get(f"{url}/v1/job", params={"queue": "demo"}, timeout=10)
        if resp.status_code != 200:
            time.sleep(0.05)
            continue
        job_id = resp.json()["job_id"]
        status: dict[str, int] = {}
        for n, phase in enumerate(("setup", "test")):
            agent.post(f"{url}/v1/result/{job_id}", json={"job_state": phase}, timeout=10)
            agent.post(
                f"{url}/v1/result/{job_id}/log/output",
                json=fragment(n, phase, f"running {phase}\n"),
                timeout=10,
            )
            status[phase] = exit_status if phase == "test" else 0
            agent.post(f"{url}/v1/result/{job_id}", json={"status": status}, timeout=10)
            time.sleep(0.1)
        agent.post(
            f"{url}/v1/result/{job_id}",
            json={"status": status, "job_state": "complete"},
            timeout=10,
        )


def test_submit_wait_follows_job_to_the_end(tf_server: LocalServer, tmp_path: Path):
    (tmp_path / "data.txt").write_text("payload\n")
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        "job_queue: demo\n"
        "test_data:\n"
        "  test_cmds: cat attachments/test/data.txt\n"
        "  attachments:\n"
        "    - agent: data.txt\n"
    )
    stop = threading.Event()
    runner = CliRunner()
    for exit_status, expected in ((0, 0), (3, 1)):
        thread = threading.Thread(target=fake_agent, args=(tf_server, "fake", exit_status, stop))
        thread.start()
        try:
            result = runner.invoke(
                submit_command,
                [str(job_file), "--server", tf_server.url, "--wait", "--poll-interval", "0.1"],
            )
        finally:
            stop.set()
            thread.join(10)
            stop.clear()
        assert result.exit_code == expected, result.output
        job_id = result.output.splitlines()[0]
        assert "running setup" in result.output and "running test" in result.output
        assert f"--- job {job_id}: complete" in result.output
        assert f"test: exit {exit_status}" in result.output
        job = requests.get(f"{tf_server.url}/v1/job/{job_id}", timeout=5).json()
        assert job["test_data"]["attachments"] == [{"agent": "data.txt"}]
        archive = requests.get(f"{tf_server.url}/v1/job/{job_id}/attachments", timeout=5)
        with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
            assert tar_member(tar, "test/data.txt") == b"payload\n"


def test_submit_uses_env_server_and_reports_errors(tf_server: LocalServer, tmp_path: Path):
    job_file = tmp_path / "job.yaml"
    job_file.write_text("job_queue: demo\nbogus: 1\n")
    runner = CliRunner()
    result = runner.invoke(
        submit_command, [str(job_file)], env={"TESTFLINGER_SERVER": tf_server.url}
    )
    assert result.exit_code == 1 and "422" in result.output
    job_file.write_text("job_queue: demo\n")
    result = runner.invoke(
        submit_command, [str(job_file)], env={"TESTFLINGER_SERVER": tf_server.url}
    )
    assert result.exit_code == 0
    assert tf_server.job_state(result.stdout.strip()) == "waiting"


def test_idle_polls_keep_the_connection_open(tf_server: LocalServer):
    import http.client

    agent_session(tf_server, "keeper", ["idle"])
    conn = http.client.HTTPConnection("127.0.0.1", tf_server.port, timeout=5)
    headers = {"Cookie": "agent_name=keeper"}
    conn.request("GET", "/v1/job?queue=idle", headers=headers)
    first = conn.getresponse()
    assert first.status == 204 and first.read() == b""
    assert first.getheader("Connection") is None
    sock = conn.sock
    conn.request("GET", "/v1/job?queue=idle", headers=headers)
    assert conn.getresponse().status == 204
    assert conn.sock is sock and sock is not None  # same TCP connection, no reconnect
    conn.close()
