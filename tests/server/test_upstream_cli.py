"""Upstream's real `testflinger-cli`, installed from ../shared/upstream-testflinger/cli into
the session's upstream venv (tests/fixtures_upstream.py), against the local server: what a
lab user types, and what they read."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fixtures_server import LocalServer, tar_member

from multiagent.server.accounts import Accounts
from multiagent.server.db import Store


@pytest.fixture(scope="module")
def upstream_cli(upstream_bin: Path) -> Path:
    return upstream_bin / "testflinger-cli"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    served = LocalServer(tmp_path / "s.db", tmp_path / "s.log", strict_provision_data=True)
    served.start()
    try:
        # upstream's CLI refuses a queue that no agent serves
        requests.post(
            f"{served.url}/v1/agents/data/dev1",
            json={"state": "waiting", "queues": ["ux"]},
            cookies={"agent_name": "dev1"},
            timeout=10,
        ).raise_for_status()
        yield served
    finally:
        served.stop()


def test_upstream_cli_submits_shows_cancels_and_reads_results(
    upstream_cli: Path, server: LocalServer, tmp_path: Path
) -> None:
    env = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(upstream_cli), "--server", server.url, *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

    job = tmp_path / "job.yaml"
    job.write_text("job_queue: ux\ntest_data:\n  test_cmds: echo hi\n")
    submitted = cli("submit", "-q", str(job))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert cli("status", job_id).stdout.strip() == "waiting"
    shown = cli("show", job_id)
    assert '"job_queue": "ux"' in shown.stdout and '"test_cmds": "echo hi"' in shown.stdout

    assert cli("cancel", job_id).returncode == 0
    assert cli("status", job_id).stdout.strip() == "cancelled"
    assert '"job_state": "cancelled"' in cli("results", job_id).stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("job_queue: ux\nprovision_data:\n  bogus: 1\n")
    refused = cli("submit", str(bad))
    assert refused.returncode != 0
    assert "[422]" in refused.stdout + refused.stderr
    assert "Invalid provision data schema." in refused.stdout + refused.stderr


@pytest.mark.parametrize("with_clients", [False, True])
def test_upstream_cli_submits_attachments_with_the_jobs_credential(
    upstream_cli: Path, server: LocalServer, tmp_path: Path, with_clients: bool
) -> None:
    """Upstream's CLI keeps the submit's cookie (a requests.Session) and so uploads with
    the job's credential, anonymous on a server with clients too; nobody else may."""
    if with_clients:
        store = Store(server.db_path, clock=time.time)
        Accounts(store).save("alice", {"role": "contributor"}, secret="alice-secret-0123456789")
        store.close()
    env = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"))
    (tmp_path / "data.txt").write_text("payload\n")
    job = tmp_path / "job.yaml"
    job.write_text(
        "job_queue: ux\ntest_data:\n  test_cmds: cat attachments/test/data.txt\n"
        "  attachments:\n    - local: data.txt\n"
    )
    command = [str(upstream_cli), "--server", server.url, "submit", "-q", str(job)]
    submitted = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.strip().splitlines()[-1]
    store = Store(server.db_path, clock=time.time)
    try:
        archive = store.get_blob(job_id, "attachments")
        assert archive is not None
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            assert tar_member(tar, "test/data.txt") == b"payload\n"
        files = {"file": ("a.tar.gz", b"substitute", "application/x-gzip")}
        url = f"{server.url}/v1/job/{job_id}/attachments"
        again = requests.post(url, files=files, timeout=10)
        assert again.status_code == (403 if with_clients else 409)
        assert store.get_blob(job_id, "attachments") == archive
    finally:
        store.close()


def test_upstream_cli_agent_status_shows_a_drain_and_its_reason(
    upstream_cli: Path, server: LocalServer, tmp_path: Path
) -> None:
    """What a drained agent posts (tf-agent at its heartbeat, tf-fleet for an upstream
    agent) is what a lab user reads with upstream's `agent-status`."""
    from multiagent.vocabulary import AgentState, drained_comment

    env = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"))
    body = {"state": AgentState.OFFLINE, "comment": drained_comment("swap the hub")}
    requests.post(
        f"{server.url}/v1/agents/data/dev1", json=body, cookies={"agent_name": "dev1"}, timeout=10
    ).raise_for_status()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(upstream_cli), "--server", server.url, "agent-status", "dev1", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

    assert cli().stdout.strip() == "offline"
    shown = json.loads(cli("--json").stdout)
    assert shown["status"] == "offline" and shown["comment"] == "drained by tf-fleet: swap the hub"
