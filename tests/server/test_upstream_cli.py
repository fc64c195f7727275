"""Upstream's real `testflinger-cli`, installed from ../shared/upstream-testflinger/cli into
a venv of its own, against the local server: what a lab user types, and what they read."""

from __future__ import annotations

import os
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fixtures_server import LocalServer

UPSTREAM_CLI = Path(__file__).resolve().parents[3] / "shared" / "upstream-testflinger" / "cli"


@pytest.fixture(scope="module")
def upstream_cli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (UPSTREAM_CLI / "pyproject.toml").is_file():
        pytest.skip(f"upstream's CLI is not beside this clone ({UPSTREAM_CLI} is absent)")
    home = tmp_path_factory.mktemp("upstream-cli")
    venv.create(home / "venv", with_pip=True)
    pip = [str(home / "venv" / "bin" / "python"), "-m", "pip", "install", "-q"]
    # Upstream versions itself from git tags, which a copy of its source does not carry.
    env = dict(os.environ, SETUPTOOLS_SCM_PRETEND_VERSION="1.0.0")
    subprocess.run([*pip, str(UPSTREAM_CLI)], check=True, env=env, timeout=300)
    return home / "venv" / "bin" / "testflinger-cli"


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
