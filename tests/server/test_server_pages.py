"""HTML pages: agents list with last-updated time and stale marking, agent, job, queues."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from fixtures_server import Clock
from test_server_api import register, submit

from multiagent.server.app import create_app


@pytest.fixture
def app_client(tmp_path: Path, clock: Clock):
    app = create_app(tmp_path / "pages.db", clock=clock)
    return app, app.test_client()


@pytest.fixture
def client(app_client):
    return app_client[1]


def row_of(html: str, name: str) -> str:
    pattern = rf'<tr class="([^"]*)" id="agent-{re.escape(name)}"[^>]*>(.*?)</tr>'
    match = re.search(pattern, html, re.S)
    assert match, f"no row for {name}"
    return match.group(1) + " " + match.group(2)


def names_in(html: str) -> list[str]:
    return re.findall(r'<tr class="[^"]*" id="agent-([^"]+)"', html)


def test_agents_page_lists_agent_with_last_seen(client, clock):
    register(client, "dev-1", location="rack 3", comment="all good", queues=["demo", "gpu"])
    clock.advance(5 * 60 + 10)
    html = client.get("/agents").get_data(as_text=True)
    assert '<nav><a href="/agents">Agents</a>' in html
    row = row_of(html, "dev-1")
    assert '<a href="/agents/dev-1">dev-1</a>' in row
    assert '<span class="st waiting">waiting</span> <span class="comment">all good</span>' in row
    assert "rack 3" in row and "demo, gpu" in row
    assert 'title="2026-05-28 20:26:40 UTC"' in row and ">5 min ago</time>" in row
    assert "stale" not in row
    assert "waiting: 1" in html and "all: 1" in html


def test_relative_times():
    from multiagent.server.pages import ago, duration

    assert ago(100, 100) == "just now" and ago(100, 41) == "just now"
    assert ago(200, 20) == "3 min ago" and ago(5000, 0) == "83 min ago"
    assert ago(3 * 3600, 0) == "3 h ago" and ago(3 * 86400, 0) == "3 days ago"
    assert duration(5) == "5 s" and duration(200) == "3 min 20 s"
    assert duration(3 * 3600 + 300) == "3 h 05 min"


def test_agents_page_marks_stale_and_offline(app_client, clock):
    app, client = app_client
    register(app.test_client(), "quiet")  # each agent has its own cookie jar
    clock.advance(10 * 60)
    register(app.test_client(), "chatty")
    register(app.test_client(), "down", state="offline", comment="broken cable")
    clock.advance(5 * 60 + 1)
    html = client.get("/agents").get_data(as_text=True)
    quiet = row_of(html, "quiet")
    assert quiet.startswith("agent stale ") and "stale</span>" in quiet
    assert "15 min ago" in quiet
    assert "stale" not in row_of(html, "chatty")
    down = row_of(html, "down")
    assert down.startswith("agent offline ")
    # The state once, with the admin's comment beside it.
    shown = '<span class="st offline">offline</span> <span class="comment">broken cable</span>'
    assert shown in down
    assert down.count("offline<") == 1
    assert "offline: 1" in html and "waiting: 2" in html


def test_agent_polls_keep_it_fresh(app_client, clock):
    app, client = app_client
    agent = app.test_client()
    register(agent, "poller")
    clock.advance(20 * 60)
    agent.get("/v1/job?queue=demo")  # its cookie is a sign of life
    html = client.get("/agents").get_data(as_text=True)
    assert "stale" not in row_of(html, "poller")


def test_agents_page_filters_and_sorts(client):
    register(client, "b-dev", queues=["lab"], location="rack 1")
    register(client, "a-dev", queues=["lab", "gpu"], location="rack 2")
    register(client, "c-dev", queues=["gpu"], location="rack 1", state="offline")
    assert names_in(client.get("/agents").get_data(as_text=True)) == ["a-dev", "b-dev", "c-dev"]
    html = client.get("/agents?queue=gpu").get_data(as_text=True)
    assert names_in(html) == ["a-dev", "c-dev"]
    assert '<option value="gpu" selected>gpu</option>' in html
    assert names_in(client.get("/agents?state=offline").get_data(as_text=True)) == ["c-dev"]
    html = client.get("/agents?location=rack+1&sort=name&dir=desc").get_data(as_text=True)
    assert names_in(html) == ["c-dev", "b-dev"]
    # Sorting links keep the filter; counts link to a state with the other filters kept.
    assert 'href="/agents?location=rack+1&amp;sort=state"' in html
    html = client.get("/agents?queue=lab").get_data(as_text=True)
    assert 'href="/agents?state=waiting&amp;queue=lab"' in html
    assert "No agent matches this filter" in client.get("/agents?queue=none").get_data(as_text=True)


def test_agents_page_escapes_html(client):
    register(client, "dev-1", comment='"><script>x</script>')
    html = client.get("/agents").get_data(as_text=True)
    assert "<script>x" not in html


def test_agent_page(client, clock):
    register(client, "dev-1", queues=["demo"], location="lab")
    client.post("/v1/agents/queues", json={"demo": "The demo queue"})
    job_id = submit(client, name="flash <it>")
    client.post(
        "/v1/agents/provision_logs/dev-1",
        json={"job_id": job_id, "exit_code": 0, "detail": "provision_success"},
    )
    client.post("/v1/agents/data/dev-1", json={"log": ["booted"]})
    html = client.get("/agents/dev-1").get_data(as_text=True)
    assert "Agent dev-1" in html and '<a href="/agents">Agents</a>' in html
    assert "The demo queue" in html and '<td class="pass">pass</td><td>0</td>' in html
    assert "Success: 100%" in html and "booted" in html
    assert f'">flash &lt;it&gt;</a> <span class="muted">{job_id}</span>' in html
    missing = client.get("/agents/nobody")
    assert missing.status_code == 404
    text = missing.get_data(as_text=True)
    assert "No agent named &#39;nobody&#39;" in text
    assert '<a href="/agents">Back to Agents</a>' in text


def test_provision_outcome_follows_the_exit_code(client):
    register(client, "dev-1")
    # A skipped provision reported with a failure's event name is still a pass.
    client.post(
        "/v1/agents/provision_logs/dev-1",
        json={"job_id": "j", "exit_code": 0, "detail": "provision_fail"},
    )
    html = client.get("/agents/dev-1").get_data(as_text=True)
    assert "provision_fail" not in html and '<td class="pass">pass</td>' in html


def test_job_page(client, clock):
    job_id = submit(client, name="hello job")
    client.post("/v1/agents/data/a1", json={"queues": ["demo"]})
    client.get("/v1/job?queue=demo")
    for phase, seconds in (("setup", 5), ("provision", 1), ("test", 200)):
        client.post(f"/v1/result/{job_id}", json={"job_state": phase})
        clock.advance(seconds)
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
    assert '<td class="job-queue">demo</td>' in html
    assert '<td class="job-start">2026-05-28 20:26:40 UTC</td>' in html
    assert "2026-05-28 20:30:06 UTC (took 3 min 26 s)" in html
    phases = dict(re.findall(r'data-phase="(\w+)"><td>\w+</td>(<td class.*?)</tr>', html, re.S))
    assert phases["setup"].startswith('<td class="pass">0</td>') and "5 s" in phases["setup"]
    assert phases["provision"].startswith('<td class="skipped">skipped</td>')
    assert phases["test"].startswith('<td class="fail">1</td>') and "3 min 20 s" in phases["test"]
    assert "hello &lt;world&gt;" in html
    assert f'href="/v1/result/{job_id}/artifact"' in html
    assert '<a href="/agents/a1">a1</a>' in html
    for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        resp = client.get(f"/jobs/{bad}")
        assert resp.status_code == 404 and "Back to Agents" in resp.get_data(as_text=True)
    assert "Back to Agents" in client.get("/nowhere").get_data(as_text=True)
    assert client.get("/v1/nowhere").get_data(as_text=True) == "Not found: /v1/nowhere\n"


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


def _run(client, clock, name: str, status: dict, final: str = "complete") -> str:
    """A job of `name` handed to agent a1, its phases' codes posted as an agent does
    (each phase's code when it ends), then `final`."""
    job_id = submit(client, name=name)
    client.post("/v1/agents/data/a1", json={"queues": ["demo"]})
    client.get("/v1/job?queue=demo")
    codes: dict = {}
    for phase, code in status.items():
        if phase != "cleanup":
            client.post(f"/v1/result/{job_id}", json={"job_state": phase})
        clock.advance(1.04)
        codes[phase] = code
        client.post(f"/v1/result/{job_id}", json={"status": dict(codes)})
    if final == "cancelled":
        client.post(f"/v1/job/{job_id}/action", json={"action": "cancel"})
    else:
        client.post(f"/v1/result/{job_id}", json={"job_state": final})
    return job_id


def verdict_of(html: str) -> str:
    match = re.search(r'<td class="verdict ([\w-]+)">([^<]*)</td>', html)
    assert match, "no verdict shown"
    return f"{match.group(1)}: {match.group(2)}"


@pytest.mark.parametrize(
    ("status", "final", "shown"),
    [
        ({"setup": 0, "test": 0, "cleanup": 0}, "complete", "passed: passed"),
        ({"setup": 0, "test": 3, "cleanup": 0}, "complete", "failed: failed in test (exit 3)"),
        ({"setup": 0, "provision": 46}, "complete", "failed: failed in provision (exit 46: "),
        ({"setup": 100, "cleanup": 0}, "complete", "agent-error: agent error in setup"),
        ({"setup": 0}, "cancelled", "cancelled: cancelled in setup"),
        ({}, "complete", "no-result: ended with no phase reported"),
        ({"setup": 0}, "test", "running: running (test)"),
    ],
)
def test_job_page_says_the_verdict(client, clock, status, final, shown):
    job_id = _run(client, clock, "v", status, final)
    assert verdict_of(client.get(f"/jobs/{job_id}").get_data(as_text=True)).startswith(shown)
    # The same verdict in the agent's list of jobs, beside the job's name.
    agent = client.get("/agents/a1").get_data(as_text=True)
    assert f'<a href="/jobs/{job_id}">v</a> <span class="muted">{job_id}</span>' in agent
    assert verdict_of(agent).startswith(shown)


def test_phases_of_about_a_second_and_cleanup_have_their_times(client, clock):
    job_id = _run(client, clock, "short", {"setup": 0, "test": 0, "cleanup": 0})
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    rows = dict(re.findall(r'data-phase="(\w+)"><td>\w+</td>(.*?)</tr>', html, re.S))
    for phase in ("setup", "test", "cleanup"):
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", rows[phase])
        assert cells[0] == "0" and cells[1].endswith(" UTC") and cells[2].endswith(" UTC")
        assert cells[3] == "1 s", (phase, cells)


def test_durations_read_as_a_person_would():
    from multiagent.server.jobview import duration

    assert duration(0.96) == "1 s" and duration(1.04) == "1 s" and duration(0.4) == "0.4 s"
    assert duration(9.5) == "9.5 s" and duration(9.97) == "10 s" and duration(59.6) == "1 min 00 s"


def test_live_parts_of_the_job_and_agent_pages(client, clock):
    job_id = _run(client, clock, "live", {"setup": 0}, "test")
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert f'data-live="/jobs/{job_id}/live" data-every="3"' in page
    part = client.get(f"/jobs/{job_id}/live").get_data(as_text=True)
    assert "<html" not in part and "running (test)" in part and "data-live-end" not in part
    client.post(f"/v1/result/{job_id}", json={"status": {"setup": 0, "test": 0}})
    client.post(f"/v1/result/{job_id}", json={"job_state": "complete"})
    part = client.get(f"/jobs/{job_id}/live").get_data(as_text=True)
    assert "data-live-end" in part and '"verdict passed">passed<' in part
    assert "data-live=" not in client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert client.get("/jobs/00000000-0000-0000-0000-000000000000/live").status_code == 404
    part = client.get("/agents/a1/live").get_data(as_text=True)
    assert "<html" not in part and 'class="agent-state"' in part and "Times are UTC" in part
    assert client.get("/agents/nobody/live").status_code == 404


def test_event_times_are_utc(client, clock):
    job_id = _run(client, clock, "ev", {"setup": 0}, "test")
    events = [{"event_name": "setup_start", "timestamp": "2026-05-28T20:30:00+00:00"}]
    body = {"job_status_webhook": "", "events": events}
    assert client.post(f"/v1/job/{job_id}/events", json=body).status_code == 200
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "<td>2026-05-28 20:30:00 UTC</td><td>setup_start</td>" in html


def test_queues_page_lists_waiting_jobs_with_times(client, clock):
    register(client, "dev-1", queues=["demo"])
    first = submit(client, name="<i>first</i>")
    clock.advance(60)
    urgent = submit(client, name="urgent", job_priority=5)
    html = client.get("/queues").get_data(as_text=True)
    assert "Times are UTC (now 2026-05-28 20:27:40 UTC)" in html
    waiting = html[html.index('<table class="waiting" data-queue="demo">') :]
    assert waiting.index(urgent) < waiting.index(first)  # the next to be taken first
    assert f'<a href="/jobs/{first}">&lt;i&gt;first&lt;/i&gt;</a>' in waiting
    assert "<td>2026-05-28 20:26:40 UTC</td>" in waiting


def test_drained_and_removed_agents_are_counted_apart(client):
    register(client, "busy-1")
    register(client, "drained-1", state="offline", comment="drained by tf-fleet: new cable")
    register(client, "gone-1", state="offline", comment="removed from the fleet by tf-fleet")
    register(client, "broken-1", state="offline", comment="Set to offline by admin. Reason: x")
    html = client.get("/agents").get_data(as_text=True)
    for count in ("waiting: 1", "drained: 1", "removed: 1", "offline: 1"):
        assert count in html
    assert row_of(html, "gone-1").startswith("agent removed ")
    assert '<span class="st drained">drained</span>' in row_of(html, "drained-1")
    assert "new cable" in client.get("/agents/drained-1").get_data(as_text=True)
