"""What `tf-fleet submit` says when the job is refused, aimed at a queue no agent serves,
or given something that is no server URL: the field and the reason, and the next step.
A real local server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from fixtures_server import LocalServer

from multiagent.fleet.cli import submit_command


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A server that checks provision_data against upstream's device schemas."""
    served = LocalServer(tmp_path / "s.db", tmp_path / "s.log", strict_provision_data=True)
    served.start()
    try:
        yield served
    finally:
        served.stop()


def _agent(server: LocalServer, name: str, queue: str, provision_type: str) -> None:
    resp = requests.post(
        f"{server.url}/v1/agents/data/{name}",
        json={"state": "waiting", "queues": [queue], "provision_type": provision_type},
        timeout=10,
    )
    assert resp.status_code == 200


def _submit(server: LocalServer, job_file: Path, *args: str):
    return CliRunner().invoke(submit_command, [str(job_file), "--server", server.url, *args])


def test_a_refused_provision_says_what_the_queues_devices_take(
    strict_server: LocalServer, tmp_path: Path
):
    tf_server = strict_server
    _agent(tf_server, "m1", "maas-q", "maas")
    job_file = tmp_path / "job.yaml"
    job_file.write_text("job_queue: maas-q\nprovision_data: {url: 'http://nodots/img'}\n")
    result = _submit(tf_server, job_file)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "error: the server refused the job (HTTP 422):"
    assert "  provision_data: Invalid provision data schema." in lines
    assert "  queue 'maas-q' is served by maas; provision_data takes:" in lines
    assert any(line.startswith("    maas (distro, kernel") for line in lines), lines
    assert "--any-provision-data" in result.stderr
    assert '{"message"' not in result.stderr and result.stdout == ""


def test_a_refused_field_is_named_with_its_reason(tf_server: LocalServer, tmp_path: Path):
    job_file = tmp_path / "job.yaml"
    job_file.write_text("job_queue: q\nbogus: 1\n")
    result = _submit(tf_server, job_file)
    assert result.exit_code == 1
    assert "  bogus: Unknown field." in result.stderr.splitlines(), result.stderr


def test_a_queue_no_agent_serves_is_warned_of(tf_server: LocalServer, tmp_path: Path):
    _agent(tf_server, "s1", "served", "noprovision")
    job_file = tmp_path / "job.yaml"
    job_file.write_text("job_queue: nobody\n")
    result = _submit(tf_server, job_file)
    assert result.exit_code == 0
    job_id = result.stdout.strip()
    assert tf_server.job_state(job_id) == "waiting"
    assert "warning: no agent serves queue 'nobody'" in result.stderr
    job_file.write_text("job_queue: served\n")
    served = _submit(tf_server, job_file)
    assert served.exit_code == 0 and served.stderr == ""


def test_a_server_that_is_no_url_is_a_usage_error(tmp_path: Path):
    job_file = tmp_path / "job.yaml"
    job_file.write_text("job_queue: q\n")
    for bad in ("notaurl", "ftp://host:21", "http://"):
        result = CliRunner().invoke(submit_command, [str(job_file), "--server", bad])
        assert result.exit_code == 2, (bad, result.output)
        assert "is not" in result.stderr and "URL" in result.stderr
