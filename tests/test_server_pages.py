"""HTML pages: agents list with last-updated time and stale marking, agent, job, queues."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from test_server_api import Clock, register, submit

from multiagent.server.app import create_app


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(tmp_path: Path, clock: Clock):
    return create_app(tmp_path / "pages.db", clock=clock).test_client()


def row_of(html: str, name: str) -> str:
    match = re.search(rf'<tr class="([^"]*)" id="agent-{re.escape(name)}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {name}"
    return match.group(1) + " " + match.group(2)


def test_agents_page_lists_agent_with_last_updated(client, clock):
    register(client, "dev-1", location="rack 3", comment="all good", queues=["demo", "gpu"])
    clock.advance(5 * 60 + 10)
    html = client.get("/agents").get_data(as_text=True)
    assert '<nav><a href="/agents">Agents</a>' in html
    row = row_of(html, "dev-1")
    assert '<a href="/agents/dev-1">dev-1</a>' in row
    assert '<td title="all good">waiting</td>' in row
    assert "rack 3" in row and "demo, gpu" in row
    assert "2026-05-28 20:26:40" in row and "5 minutes ago" in row
    assert "stale" not in row


def test_agents_page_marks_stale_after_15_minutes(client, clock):
    register(client, "quiet")
    clock.advance(10 * 60)
    register(client, "chatty")
    clock.advance(5 * 60 + 1)
    html = client.get("/agents").get_data(as_text=True)
    quiet = row_of(html, "quiet")
    assert quiet.startswith("agent stale ") and "stale</span>" in quiet
    assert "15 minutes ago" in quiet
    assert "stale" not in row_of(html, "chatty")


def test_agents_page_links_current_job(client):
    job_id = submit(client)
    register(client, "dev-1", job_id=job_id)
    html = client.get("/agents").get_data(as_text=True)
    assert f'<a href="/jobs/{job_id}">{job_id}</a>' in row_of(html, "dev-1")


def test_agents_page_escapes_html(client):
    register(client, "dev-1", comment='"><script>x</script>')
    html = client.get("/agents").get_data(as_text=True)
    assert "<script>x" not in html


def test_agent_page(client, clock):
    register(client, "dev-1", queues=["demo"], location="lab")
    client.post("/v1/agents/queues", json={"demo": "The demo queue"})
    job_id = submit(client)
    client.post(
        "/v1/agents/provision_logs/dev-1",
        json={"job_id": job_id, "exit_code": 0, "detail": "provision_success"},
    )
    client.post("/v1/agents/data/dev-1", json={"log": ["booted"]})
    html = client.get("/agents/dev-1").get_data(as_text=True)
    assert "Agent dev-1" in html and '<a href="/agents">Agents</a>' in html
    assert "The demo queue" in html and "provision_success" in html
    assert "Success: 100%" in html and "booted" in html
    assert client.get("/agents/nobody").status_code == 404


def test_job_page(client):
    job_id = submit(client, name="hello job")
    client.post("/v1/agents/data/a1", json={"queues": ["demo"]})
    client.get("/v1/job?queue=demo")
    client.post(
        f"/v1/result/{job_id}", json={"status": {"setup": 0, "test": 1}, "job_state": "complete"}
    )
    client.post(
        f"/v1/result/{job_id}/log/output",
        json={
            "fragment_number": 0,
            "timestamp": "2026-05-28T20:30:00+00:00",
            "phase": "test",
            "log_data": "hello <world>\n",
        },
    )
    client.post(f"/v1/result/{job_id}/artifact", data={"file": (io.BytesIO(b"x"), "file")})
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert '<td class="job-state">complete</td>' in html
    assert '<td>test</td><td class="fail">1</td>' in html
    assert '<td>setup</td><td class="pass">0</td>' in html
    assert "hello &lt;world&gt;" in html
    assert f'href="/v1/result/{job_id}/artifact"' in html
    assert '<a href="/agents/a1">a1</a>' in html
    assert client.get("/jobs/not-a-uuid").status_code == 404
    assert client.get("/jobs/00000000-0000-0000-0000-000000000000").status_code == 404


def test_queues_page(client):
    register(client, "dev-1", queues=["demo"])
    client.post("/v1/agents/queues", json={"demo": "Demo queue"})
    submit(client)
    submit(client)
    html = client.get("/queues").get_data(as_text=True)
    assert '<a href="/agents">Agents</a>' in html
    assert re.search(
        r"<td>demo</td><td>Demo queue</td>\s*<td><a href=\"/agents/dev-1\">"
        r"dev-1</a></td>\s*<td>2</td><td>0</td>",
        html,
    )
