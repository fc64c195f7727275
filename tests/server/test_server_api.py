"""API v1 of the local server through the Flask test client (no sockets)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from fixtures_server import Clock, tar_gz

from multiagent.server import SERVER_VERSION
from multiagent.server.app import create_app
from multiagent.server.policy import Policy


@pytest.fixture
def app(tmp_path: Path, clock: Clock):
    return create_app(tmp_path / "api.db", clock=clock)


@pytest.fixture
def client(app):
    return app.test_client()


# One output fragment of the test phase, as an agent posts it.
FRAGMENT = {
    "fragment_number": 0,
    "timestamp": "2026-05-28T20:30:00+00:00",
    "phase": "test",
    "log_data": "x",
}


def register(client, name: str = "agent-1", **fields: Any):
    body = {"state": "waiting", "queues": ["demo"], **fields}
    resp = client.post(f"/v1/agents/data/{name}", json=body)
    assert resp.status_code == 200
    return resp


def submit(client, **job: Any) -> str:
    job.setdefault("job_queue", "demo")
    resp = client.post("/v1/job", json=job)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["job_id"]


def agent_client(app, name: str, queues: list[str] | None = None):
    c = app.test_client()
    register(c, name, queues=queues or ["demo"])
    return c


def pop(c, *queues: str, ack: bool = True):
    """Ask for a job; an agent's first word after one (`ack`) names it, as agents do."""
    resp = c.get("/v1/job", query_string=[("queue", q) for q in queues or ("demo",)])
    name = c.get_cookie("agent_name")
    if ack and resp.status_code == 200 and name is not None:
        job_id = resp.get_json()["job_id"]
        assert c.post(f"/v1/agents/data/{name.value}", json={"job_id": job_id}).status_code == 200
    return resp


# -- health, slashes --------------------------------------------------------------------
def test_health_text(client):
    resp = client.get("/v1")
    assert resp.status_code == 200
    assert resp.get_data(as_text=True) == f"Testflinger Server v{SERVER_VERSION}"
    assert client.get("/v1/").status_code == 200


def test_trailing_slash_is_accepted(client):
    assert client.post("/v1/job/", json={"job_queue": "demo"}).status_code == 200
    assert client.get("/v1/agents/data/").status_code == 200


def test_root_redirects_to_agents(client):
    resp = client.get("/")
    assert resp.status_code in (301, 302)
    assert resp.headers["Location"].endswith("/agents")


# -- agent data -------------------------------------------------------------------------
def test_agent_post_sets_cookie_and_get_returns_document(client, clock):
    resp = register(client, "dev-1", location="lab", comment="ok", identifier="SN1")
    assert resp.get_json() == {"status": "OK"}
    cookie = resp.headers["Set-Cookie"]
    assert "agent_name=dev-1" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    data = client.get("/v1/agents/data/dev-1").get_json()
    assert data["name"] == "dev-1"
    assert data["state"] == "waiting" and data["location"] == "lab"
    assert data["updated_at"] == "2026-05-28T20:26:40Z"
    assert data["restricted_to"] == {}
    assert "log" not in data and "updated_at_ts" not in data


def test_agent_post_merges_fields_and_bumps_updated_at(client, clock):
    register(client, "dev-1", location="lab")
    clock.advance(90)
    client.post("/v1/agents/data/dev-1", json={"job_id": "abc"})
    data = client.get("/v1/agents/data/dev-1").get_json()
    assert data["location"] == "lab" and data["job_id"] == "abc"
    assert data["updated_at"] == "2026-05-28T20:28:10Z"


def test_agent_log_keeps_last_100(app, client):
    register(client, "dev-1")
    for start in range(0, 150, 30):
        lines = [f"line {i}" for i in range(start, start + 30)]
        assert client.post("/v1/agents/data/dev-1", json={"log": lines}).status_code == 200
    agent = app.extensions["tf_store"].get_agent("dev-1", with_log=True)
    assert len(agent["log"]) == 100
    assert agent["log"][0] == "line 50" and agent["log"][-1] == "line 149"


@pytest.mark.parametrize(
    "body",
    [
        {"foo": "bar"},
        {"state": 3},
        {"queues": "demo"},
        {"queues": [1]},
        {"log": "x"},
        [1],
    ],
)
def test_agent_post_rejects_bad_fields(client, body):
    resp = client.post("/v1/agents/data/dev-1", json=body)
    assert resp.status_code == 422
    assert resp.get_json()["message"] == "Validation error"


def test_agent_get_unknown_is_404_with_empty_object(client):
    resp = client.get("/v1/agents/data/nobody")
    assert resp.status_code == 404 and resp.get_json() == {}


def test_agents_list_and_queue_agents(client):
    register(client, "a1", queues=["q1"])
    register(client, "a2", queues=["q1", "q2"])
    names = [a["name"] for a in client.get("/v1/agents/data").get_json()]
    assert names == ["a1", "a2"]
    assert [a["name"] for a in client.get("/v1/queues/q2/agents").get_json()] == ["a2"]
    # Upstream: a queue no agent listens to does not exist (the CLI stops on this 404).
    unknown = client.get("/v1/queues/none/agents")
    assert unknown.status_code == 404
    assert unknown.get_json()["message"] == "Queue 'none' does not exist."
    assert set(client.get("/v1/queues/q1/agents").get_json()[0]) == {"name", "state", "queues"}


def test_advertised_queues_and_images(client):
    assert client.post("/v1/agents/queues", json={"demo": "Demo queue"}).status_code == 200
    assert client.post("/v1/agents/queues", json={"": "x"}).status_code == 422
    assert client.post("/v1/agents/queues", json={"q": 1}).status_code == 422
    assert client.get("/v1/agents/queues").get_json() == {"demo": "Demo queue"}
    ok = {"demo": {"jammy": "url: http://x/jammy.img"}}
    assert client.post("/v1/agents/images", json=ok).status_code == 200
    for bad in ({"demo": {"$x": "u"}}, {"demo": {"a.b": "u"}}, {"demo": {"a": 1}}, {"demo": 1}):
        assert client.post("/v1/agents/images", json=bad).status_code == 422
    register(client, "a1", queues=["other"])
    submit(client, job_queue="pending")
    assert client.get("/v1/queues").get_json() == {
        "demo": "Demo queue",
        "other": "",
        "pending": "",
    }


def test_provision_logs_and_streak(client):
    body = {"job_id": str(uuid.uuid4()), "exit_code": 0, "detail": "provision_success"}
    assert client.post("/v1/agents/provision_logs/ghost", json=body).status_code == 404
    register(client, "dev-1")
    for code in (0, 0, 1):
        resp = client.post("/v1/agents/provision_logs/dev-1", json=body | {"exit_code": code})
        assert resp.status_code == 200
    data = client.get("/v1/agents/data/dev-1").get_json()
    assert data["provision_streak_type"] == "fail" and data["provision_streak_count"] == 1
    assert client.post("/v1/agents/provision_logs/dev-1", json={"job_id": "x"}).status_code == 422
    extra = body | {"extra": 1}
    assert client.post("/v1/agents/provision_logs/dev-1", json=extra).status_code == 422


# -- job submission and polling ---------------------------------------------------------
def test_submit_defaults_and_get_job(client):
    job_id = submit(client, name="j", test_data={"test_cmds": "echo hi"})
    job = client.get(f"/v1/job/{job_id}").get_json()
    assert job["job_id"] == job_id and job["exclude_agents"] == []
    assert job["test_data"] == {"test_cmds": "echo hi"}
    assert "attachments_status" not in job
    assert client.get(f"/v1/result/{job_id}").get_json()["job_state"] == "waiting"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"job_queue": ""},
        {"job_queue": "demo", "bogus": 1},
        {"job_queue": "demo", "job_priority": "high"},
        {"job_queue": "demo", "provision_data": {"url": "myimage"}},
        {"job_queue": "demo", "reserve_data": {"timeout": "soon"}},
        {"job_queue": "demo", "reserve_data": {"ssh_keys": ["me"]}},
        {"job_queue": "demo", "test_data": {"test_cmds": "ls", "extra": 1}},
        {"job_queue": "demo", "test_data": {"attachments": [{"agent": "a", "local": "b"}]}},
        {"job_queue": "demo", "test_data": {"secrets": {"1BAD": "p"}}},
        {"job_queue": "demo", "exclude_agents": "a1"},
        {"job_queue": "demo", "test_data": {"attachments": [{"device": "x"}]}},
    ],
)
def test_submit_validation(client, body):
    assert client.post("/v1/job", json=body).status_code == 422


def test_poll_needs_queue_and_cookie(app, client):
    submit(client)
    assert client.get("/v1/job").status_code == 400
    anonymous = app.test_client()
    resp = pop(anonymous, "demo")
    assert resp.status_code == 401
    assert resp.get_json()["message"] == "Agent not identified"
    # The job is still there for an identified agent.
    assert pop(agent_client(app, "a1"), "demo").status_code == 200


def test_poll_marks_running_and_returns_job(app, client, clock):
    job_id = submit(client, test_data={"test_cmds": "true"})
    agent = agent_client(app, "a1")
    clock.advance(5)
    resp = pop(agent, "demo")
    assert resp.status_code == 200
    job = resp.get_json()
    assert job["job_id"] == job_id and job["started_at"] == "2026-05-28T20:26:45Z"
    assert client.get(f"/v1/result/{job_id}").get_json()["job_state"] == "running"
    assert pop(agent, "demo").status_code == 204
    assert pop(agent, "demo").data == b""


def test_priority_then_fifo(app, client):
    low1 = submit(client)
    high = submit(client, job_priority=10)
    low2 = submit(client)
    mid = submit(client, job_priority=5)
    agent = agent_client(app, "a1")
    order = [pop(agent, "demo").get_json()["job_id"] for _ in range(4)]
    assert order == [high, mid, low1, low2]


def test_poll_several_queues(app, client):
    a = submit(client, job_queue="qa")
    b = submit(client, job_queue="qb", job_priority=3)
    submit(client, job_queue="qc")
    agent = agent_client(app, "a1", ["qa", "qb"])
    got = [pop(agent, "qa", "qb").get_json()["job_id"] for _ in range(2)]
    assert got == [b, a]
    assert pop(agent, "qa", "qb").status_code == 204


def test_exclude_agents(app, client):
    a1, a2 = agent_client(app, "a1"), agent_client(app, "a2")
    job_id = submit(client, exclude_agents=["a1"])
    everyone = client.post("/v1/job", json={"job_queue": "demo", "exclude_agents": ["a1", "a2"]})
    assert everyone.status_code == 422
    assert "no agents on the specified queue" in str(everyone.get_json())
    assert pop(a1, "demo").status_code == 204
    assert pop(a2, "demo").get_json()["job_id"] == job_id


def test_attachments_block_until_uploaded(app, client):
    job_id = submit(client, test_data={"test_cmds": "ls", "attachments": [{"agent": "f.txt"}]})
    # Upstream's job view has no attachments_status; the job handed to an agent has.
    assert "attachments_status" not in client.get(f"/v1/job/{job_id}").get_json()
    agent = agent_client(app, "a1")
    assert pop(agent, "demo").status_code == 204
    assert agent.get(f"/v1/job/{job_id}/attachments").status_code == 204
    archive = tar_gz({"test/f.txt": b"hello"})
    resp = client.post(
        f"/v1/job/{job_id}/attachments", data={"file": (io.BytesIO(archive), "attachments.tar.gz")}
    )
    assert resp.status_code == 200
    job = pop(agent, "demo").get_json()
    assert job["job_id"] == job_id and job["attachments_status"] == "complete"
    resp = agent.get(f"/v1/job/{job_id}/attachments")
    assert resp.status_code == 200 and resp.data == archive
    assert resp.mimetype == "application/gzip"


def test_attachment_upload_errors(client):
    plain = submit(client)
    data = {"file": (io.BytesIO(b"x"), "a.tar.gz")}
    assert client.post(f"/v1/job/{plain}/attachments", data=data).status_code == 422
    assert client.post(f"/v1/job/{plain}/attachments", data={}).status_code == 400
    missing = str(uuid.uuid4())
    data = {"file": (io.BytesIO(b"x"), "a.tar.gz")}
    resp = client.post(f"/v1/job/{missing}/attachments", data=data)
    assert resp.status_code == 422
    assert resp.get_data(as_text=True) == f"Job {missing} is not valid\n"
    assert client.get("/v1/job/not-a-uuid/attachments").status_code == 400


def test_cancel(app, client):
    job_id = submit(client)
    resp = client.post(f"/v1/job/{job_id}/action", json={"action": "cancel"})
    assert resp.status_code == 200
    assert client.get(f"/v1/result/{job_id}").get_json()["job_state"] == "cancelled"
    assert pop(agent_client(app, "a1"), "demo").status_code == 204
    again = client.post(f"/v1/job/{job_id}/action", json={"action": "cancel"})
    assert again.status_code == 400
    other = submit(client)
    assert client.post(f"/v1/job/{other}/action", json={"action": "nope"}).status_code == 422
    assert client.post(f"/v1/job/{other}/action", json={"x": 1}).status_code == 422
    # Upstream answers an unknown id like a finished job: 400, which the CLI reports.
    missing = str(uuid.uuid4())
    resp = client.post(f"/v1/job/{missing}/action", json={"action": "cancel"})
    assert resp.status_code == 400
    assert resp.get_data(as_text=True) == "The job is already completed or cancelled"
    assert client.post("/v1/job/bad/action", json={"action": "cancel"}).status_code == 400


def test_cancel_sticks_against_later_agent_posts(app, client):
    job_id = submit(client)
    pop(agent_client(app, "a1"), "demo")
    client.post(f"/v1/job/{job_id}/action", json={"action": "cancel"})
    client.post(f"/v1/result/{job_id}", json={"job_state": "complete", "status": {"test": 0}})
    result = client.get(f"/v1/result/{job_id}").get_json()
    assert result["job_state"] == "cancelled" and result["test_status"] == 0


def test_cancel_completed_job_is_400(client):
    job_id = submit(client)
    client.post(f"/v1/result/{job_id}", json={"job_state": "complete"})
    assert client.post(f"/v1/job/{job_id}/action", json={"action": "cancel"}).status_code == 400


def test_position(app, client):
    first = submit(client)
    second = submit(client)
    urgent = submit(client, job_priority=9)
    positions = [
        client.get(f"/v1/job/{j}/position").get_data(as_text=True) for j in (urgent, first, second)
    ]
    assert positions == ["0", "1", "2"]  # upstream: plain-text digits
    pop(agent_client(app, "a1"), "demo")
    assert client.get(f"/v1/job/{urgent}/position").status_code == 410
    assert client.get(f"/v1/job/{first}/position").get_data(as_text=True) == "0"
    assert client.get("/v1/job/zzz/position").status_code == 400


def test_bad_job_ids_are_400(client):
    for method, path in [
        ("get", "/v1/job/xyz"),
        ("get", "/v1/result/xyz"),
        ("get", "/v1/result/xyz/artifact"),
        ("get", "/v1/result/xyz/log/output"),
        ("get", "/v1/job/xyz/position"),
    ]:
        assert getattr(client, method)(path).status_code == 400, path
    assert client.post("/v1/result/xyz", json={"job_state": "test"}).status_code == 400
    log = {
        "fragment_number": 0,
        "timestamp": "2026-01-01T00:00:00+00:00",
        "phase": "test",
        "log_data": "x",
    }
    assert client.post("/v1/result/xyz/log/output", json=log).status_code == 400
    data = {"file": (io.BytesIO(b"x"), "file")}
    assert client.post("/v1/result/xyz/artifact", data=data).status_code == 400
    events = {"job_status_webhook": "http://x", "events": []}
    assert client.post("/v1/job/xyz/events", json=events).status_code == 400


def test_unknown_job_reads(client):
    missing = str(uuid.uuid4())
    assert client.get(f"/v1/job/{missing}").status_code == 204
    assert client.get(f"/v1/result/{missing}").status_code == 204
    assert client.get(f"/v1/result/{missing}/artifact").status_code == 204


# -- results, logs, artifacts, events ---------------------------------------------------
def test_result_post_and_flat_get(app, client):
    job_id = submit(client)
    pop(agent_client(app, "a1"), "demo")
    posts = [
        {"job_state": "setup"},
        {"status": {"setup": 0}},
        {"job_state": "test"},
        {"device_info": {"device_ip": "10.0.0.2"}},
        {"status": {"setup": 0, "test": 3}, "job_state": "complete"},
    ]
    for body in posts:
        assert client.post(f"/v1/result/{job_id}", json=body).status_code == 200
    for n, (phase, text) in enumerate([("setup", "s1\n"), ("test", "t1\n"), ("test", "t2\n")]):
        frag = {
            "fragment_number": n,
            "timestamp": "2026-05-28T20:30:00.123456+00:00",
            "phase": phase,
            "log_data": text,
        }
        assert client.post(f"/v1/result/{job_id}/log/output", json=frag).status_code == 200
    serial = {
        "fragment_number": 0,
        "timestamp": "2026-05-28T20:30:00+00:00",
        "phase": "test",
        "log_data": "console",
    }
    assert client.post(f"/v1/result/{job_id}/log/serial", json=serial).status_code == 200
    assert client.get(f"/v1/result/{job_id}").get_json() == {
        "setup_status": 0,
        "test_status": 3,
        "setup_output": "s1\n",
        "test_output": "t1\nt2\n",
        "test_serial": "console",
        "device_info": {"device_ip": "10.0.0.2"},
        "job_state": "complete",
    }


@pytest.mark.parametrize(
    "body",
    [
        {"foo": "bar"},
        {"status": {"bogus_phase": 0}},
        {"status": {"test": "0"}},
        {"test_status": 0},
        {"device_info": "x"},
        {"job_state": 1},
    ],
)
def test_result_post_is_strict(client, body):
    job_id = submit(client)
    assert client.post(f"/v1/result/{job_id}", json=body).status_code == 422


def test_result_post_unknown_job_is_404_and_stores_nothing(client):
    # Upstream answers OK and stores nothing; here the agent learns that the job is gone.
    missing = str(uuid.uuid4())
    assert client.post(f"/v1/result/{missing}", json={"job_state": "test"}).status_code == 404
    assert client.get(f"/v1/result/{missing}").status_code == 204


def test_result_post_too_large_is_413(client):
    job_id = submit(client)
    big = {"device_info": {"blob": "x" * (16 * 1024 * 1024)}}
    assert client.post(f"/v1/result/{job_id}", json=big).status_code == 413


def test_log_fragments_get_and_filters(client):
    job_id = submit(client)
    url = f"/v1/result/{job_id}/log/output"
    for n, phase in enumerate(["setup", "test", "test"]):
        frag = {
            "fragment_number": n,
            "timestamp": f"2026-05-28T20:3{n}:00+00:00",
            "phase": phase,
            "log_data": f"{phase}{n}\n",
        }
        client.post(url, json=frag)
    full = client.get(url).get_json()
    none = {"last_fragment_number": -1, "log_data": ""}
    assert full == {
        "output": {
            "setup": {"last_fragment_number": 0, "log_data": "setup0\n"},
            "provision": none,
            "firmware_update": none,
            "test": {"last_fragment_number": 2, "log_data": "test1\ntest2\n"},
            "allocate": none,
            "reserve": none,
            "cleanup": none,
        }
    }
    assert client.get(url, query_string={"phase": "test", "start_fragment": 2}).get_json() == {
        "output": {"test": {"last_fragment_number": 2, "log_data": "test2\n"}}
    }
    assert client.get(url, query_string={"phase": "reserve"}).get_json() == {
        "output": {"reserve": {"last_fragment_number": -1, "log_data": ""}}
    }
    since = client.get(url, query_string={"start_timestamp": "2026-05-28T20:31:00Z"})
    assert since.get_json()["output"]["setup"] == none
    assert since.get_json()["output"]["test"]["log_data"] == "test1\ntest2\n"
    text = client.get(url, query_string={"format": "text"})
    assert text.get_data(as_text=True) == "setup0\ntest1\ntest2\n"
    assert client.get(url, query_string={"phase": "bogus"}).status_code == 400
    assert client.get(url, query_string={"start_fragment": "x"}).status_code == 400
    assert client.get(url, query_string={"start_fragment": "-1"}).status_code == 400
    bad = client.get(url, query_string={"start_timestamp": "yesterday", "bogus": "1"})
    assert bad.status_code == 400
    assert set(bad.get_json()["message"]) == {"start_timestamp", "bogus"}


@pytest.mark.parametrize(
    "body",
    [
        {"fragment_number": 0, "timestamp": "2026-05-28T20:30:00+00:00", "phase": "test"},
        {
            "fragment_number": "0",
            "timestamp": "2026-05-28T20:30:00+00:00",
            "phase": "test",
            "log_data": "",
        },
        {"fragment_number": 0, "timestamp": "yesterday", "phase": "test", "log_data": ""},
        {
            "fragment_number": 0,
            "timestamp": "2026-05-28T20:30:00+00:00",
            "phase": "bogus",
            "log_data": "",
        },
        {
            "fragment_number": 0,
            "timestamp": "2026-05-28T20:30:00+00:00",
            "phase": "test",
            "log_data": "",
            "extra": 1,
        },
    ],
)
def test_log_post_is_strict(client, body):
    job_id = submit(client)
    assert client.post(f"/v1/result/{job_id}/log/output", json=body).status_code == 422


def test_bad_log_type_is_clean_404(client):
    job_id = submit(client)
    frag = FRAGMENT
    for resp in (
        client.post(f"/v1/result/{job_id}/log/bogus", json=frag),
        client.get(f"/v1/result/{job_id}/log/bogus"),
    ):
        assert resp.status_code == 404
        assert "output or serial" in resp.get_json()["message"]


def test_artifact_roundtrip(client):
    job_id = submit(client)
    archive = tar_gz({"artifacts/hello.txt": b"hi\n"})
    url = f"/v1/result/{job_id}/artifact"
    assert client.post(url, data={}).status_code == 400
    resp = client.post(url, data={"file": (io.BytesIO(archive), "file", "application/x-gzip")})
    assert resp.status_code == 200
    got = client.get(url)
    assert got.status_code == 200 and got.data == archive
    newer = tar_gz({"artifacts/hello.txt": b"again\n"})
    client.post(url, data={"file": (io.BytesIO(newer), "file")})
    assert client.get(url).data == newer


def test_events(client):
    job_id = submit(client, job_status_webhook="http://hook")
    body = {
        "agent_id": "a1",
        "job_queue": "demo",
        "job_status_webhook": "http://hook",
        "events": [{"event_name": "job_start", "timestamp": "t", "detail": "d"}],
    }
    assert client.post(f"/v1/job/{job_id}/events", json=body).status_code == 200
    assert client.post(f"/v1/job/{job_id}/events", json={"events": []}).status_code == 422
    assert client.post(f"/v1/job/{job_id}/events", json=body | {"x": 1}).status_code == 422
    missing = str(uuid.uuid4())
    assert client.post(f"/v1/job/{missing}/events", json=body).status_code == 404
    assert "job_start" in client.get(f"/jobs/{job_id}").get_data(as_text=True)


# -- auth -------------------------------------------------------------------------------
@pytest.fixture
def secured(tmp_path: Path, clock: Clock):
    return create_app(tmp_path / "auth.db", Policy(token="s3cret"), clock=clock).test_client()


def test_shared_token_gates_agent_endpoints(secured):
    job_id = str(uuid.uuid4())
    frag = FRAGMENT
    agent_only: list[tuple[str, str, dict[str, Any]]] = [
        ("post", "/v1/agents/data/a1", {"json": {"state": "waiting"}}),
        ("post", "/v1/agents/queues", {"json": {"q": "d"}}),
        ("post", "/v1/agents/images", {"json": {"q": {"i": "u"}}}),
        ("post", "/v1/agents/provision_logs/a1", {"json": {"job_id": "j", "exit_code": 0}}),
        ("get", "/v1/job?queue=demo", {}),
        ("get", f"/v1/job/{job_id}/attachments", {}),
        ("post", f"/v1/result/{job_id}", {"json": {"job_state": "test"}}),
        ("post", f"/v1/result/{job_id}/log/output", {"json": frag}),
        ("post", f"/v1/job/{job_id}/events", {"json": {"job_status_webhook": "h"}}),
    ]
    for method, path, kwargs in agent_only:
        # Upstream: anonymous has no agent role (403); an undecodable token is 403 too.
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            resp = getattr(secured, method)(path, headers=headers, **kwargs)
            assert resp.status_code == 403, (path, headers)
    good = {"Authorization": "Bearer s3cret"}
    assert secured.post("/v1/agents/data/a1", json={}, headers=good).status_code == 200
    # Anonymous callers are upstream's contributors: they submit plain jobs; unlike
    # upstream they read nothing but the health check once a token is set.
    resp = secured.post("/v1/job", json={"job_queue": "demo"})
    assert resp.status_code == 200
    assert secured.get("/v1").status_code == 200
    for path in (
        "/v1/agents/data",
        "/v1/agents/data/a1",
        "/v1/queues",
        "/agents",
        f"/v1/job/{resp.get_json()['job_id']}",
    ):
        assert secured.get(path).status_code == 401, path
        assert secured.get(path, headers=good).status_code == 200, path
    priority = {"job_queue": "demo", "job_priority": 5}
    assert secured.post("/v1/job", json=priority).status_code == 401
    assert secured.post("/v1/job", json=priority, headers=good).status_code == 200


def test_refresh_endpoint(secured, client):
    ok = secured.post("/v1/oauth2/refresh", json={"refresh_token": "s3cret"})
    assert ok.status_code == 200
    assert ok.get_json() == {"access_token": "s3cret", "token_type": "Bearer", "expires_in": 600}
    bad = secured.post("/v1/oauth2/refresh", json={"refresh_token": "nope"})
    assert bad.status_code == 400 and bad.get_json()["message"] == "Invalid refresh token."
    assert secured.post("/v1/oauth2/refresh", json={"refresh_token": ""}).status_code == 422
    assert secured.post("/v1/oauth2/refresh", json={}).status_code == 422
    # Without a server token any refresh token works (nothing is checked anyway).
    anon = client.post("/v1/oauth2/refresh", json={"refresh_token": "whatever"})
    assert anon.status_code == 200 and anon.get_json()["access_token"] == "whatever"
    token = secured.post("/v1/oauth2/token", auth=("charm", "s3cret"))
    assert token.status_code == 200 and token.get_json()["refresh_token"] == "s3cret"
    assert secured.post("/v1/oauth2/token", auth=("charm", "x")).status_code == 401
