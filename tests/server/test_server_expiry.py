"""Expiry with an injected clock: hidden on read at the deadline, deleted by the sweep."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from fixtures_server import Clock
from test_server_api import FRAGMENT, register, submit

from multiagent.server.app import create_app
from multiagent.server.expiry import Sweeper
from multiagent.server.policy import Policy
from multiagent.vocabulary import parse_duration

DAY = 86400


@pytest.fixture
def app(tmp_path: Path, clock: Clock):
    return create_app(tmp_path / "exp.db", clock=clock)


def names(client) -> list[str]:
    return [a["name"] for a in client.get("/v1/agents/data").get_json()]


def test_agent_silent_seven_days_is_gone_six_days_is_listed(app, clock):
    client = app.test_client()
    register(client, "old")
    clock.advance(DAY)
    register(client, "recent")
    clock.advance(6 * DAY)
    assert names(client) == ["old", "recent"]  # exactly 7 days: still there
    clock.advance(1)
    # Hidden at once, before any sweep ran.
    assert names(client) == ["recent"]
    assert client.get("/v1/agents/data/old").status_code == 404
    assert "/agents/old" not in client.get("/agents").get_data(as_text=True)
    assert client.get("/agents/old").status_code == 404
    assert client.get("/v1/queues/demo/agents").get_json()[0]["name"] == "recent"
    store = app.extensions["tf_store"]
    assert store.sweep()["agents"] == 1
    row = store.conn().execute("SELECT COUNT(*) FROM agents WHERE name = 'old'").fetchone()
    assert row[0] == 0


def test_expired_agent_reposting_starts_afresh(app, clock):
    client = app.test_client()
    register(client, "dev", location="lab", comment="old comment")
    clock.advance(7 * DAY + 1)
    client.post("/v1/agents/data/dev", json={"state": "waiting"})
    data = client.get("/v1/agents/data/dev").get_json()
    assert data["state"] == "waiting" and "location" not in data


def test_agent_ttl_is_configurable(tmp_path: Path, clock: Clock):
    client = create_app(
        tmp_path / "ttl.db", Policy(agent_ttl=parse_duration("30m")), clock=clock
    ).test_client()
    register(client, "dev")
    clock.advance(29 * 60)
    assert names(client) == ["dev"]
    clock.advance(61)
    assert names(client) == []


def test_jobs_expire_seven_days_after_creation_with_their_data(app, clock):
    client = app.test_client()
    job_id = submit(client)
    frag = FRAGMENT
    client.post(f"/v1/result/{job_id}/log/output", json=frag)
    client.post(f"/v1/result/{job_id}/artifact", data={"file": (io.BytesIO(b"tgz"), "file")})
    client.post(f"/v1/job/{job_id}/events", json={"job_status_webhook": "h", "events": []})
    clock.advance(7 * DAY - 1)
    assert client.get(f"/v1/job/{job_id}").status_code == 200
    clock.advance(2)
    assert client.get(f"/v1/job/{job_id}").status_code == 204
    assert client.get(f"/v1/result/{job_id}").status_code == 204
    assert client.get(f"/v1/result/{job_id}/artifact").status_code == 204
    logs = client.get(f"/v1/result/{job_id}/log/output").get_json()["output"]
    assert {entry["last_fragment_number"] for entry in logs.values()} == {-1}
    counts = app.extensions["tf_store"].sweep()
    assert counts["jobs"] == 1 and counts["logs"] == 1
    assert counts["blobs"] == 1 and counts["events"] == 1


def test_expired_job_is_not_handed_out(app, clock):
    client = app.test_client()
    submit(client)
    clock.advance(7 * DAY + 1)
    register(client, "a1")
    assert client.get("/v1/job?queue=demo").status_code == 204


def test_sweeper_thread_runs_periodically(app, clock):
    client = app.test_client()
    register(client, "dev")
    clock.advance(8 * DAY)
    sweeper = Sweeper(app.extensions["tf_store"], interval=0.05)
    sweeper.start()
    try:
        store = app.extensions["tf_store"]
        deadline = time.monotonic() + 2
        while store.conn().execute("SELECT COUNT(*) FROM agents").fetchone()[0]:
            assert time.monotonic() < deadline, "the sweeper never removed the expired agent"
            time.sleep(0.02)
    finally:
        sweeper.stop()
