"""The local server probed as a local user or a lab device would: secrets, reads, who may
write a job, job states, malformed and oversized input (issue cases 1, 4, 5 and 6)."""

from __future__ import annotations

import base64
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from multiagent.server.accounts import Accounts
from multiagent.server.app import create_app
from multiagent.server.limits import Limits
from multiagent.server.policy import Policy

SHARED = "s3cret-shared-token"
BEARER = {"Authorization": f"Bearer {SHARED}"}
FRAGMENT = {"fragment_number": 0, "timestamp": "2026-05-28T20:30:00Z", "phase": "test"}


@pytest.fixture
def lab(tmp_path: Path):
    """A server with clients: alice (contributor) owns a secret; two agents."""
    app = create_app(tmp_path / "lab.db", Policy(any_provision_data=True))
    accounts = Accounts(app.extensions["tf_store"])
    accounts.save("alice", {"role": "contributor"}, secret="alice-secret-0123456789")
    for name in ("dut-1", "dut-2"):
        accounts.save(name, {"role": "agent"}, secret=f"{name}-secret-0123456789")
    return app


def login(app, user: str, secret: str) -> dict[str, str]:
    resp = app.test_client().post("/v1/oauth2/token", auth=(user, secret))
    assert resp.status_code == 200
    return {"Authorization": f"Bearer {resp.get_json()['access_token']}"}


def agent(app, name: str):
    c = app.test_client()
    headers = login(app, name, f"{name}-secret-0123456789")
    c.environ_base["HTTP_AUTHORIZATION"] = headers["Authorization"]
    body = {"state": "waiting", "queues": ["lab"]}
    assert c.post(f"/v1/agents/data/{name}", json=body).status_code == 200
    return c


def submit_with_secret(app) -> str:
    alice = login(app, "alice", "alice-secret-0123456789")
    c = app.test_client()
    put = c.put("/v1/secrets/alice/lab/key", json={"value": "hunter2-value"}, headers=alice)
    assert put.status_code == 200
    job = {"job_queue": "lab", "test_data": {"test_cmds": "x", "secrets": {"KEY": "lab/key"}}}
    resp = c.post("/v1/job", json=job, headers=alice)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["job_id"]


# -- case 1: secrets and reads --------------------------------------------------------
def test_case1_secret_values_reach_only_the_agent_that_pops(lab):
    job_id = submit_with_secret(lab)
    dut1, dut2 = agent(lab, "dut-1"), agent(lab, "dut-2")
    anonymous = lab.test_client()
    alice = login(lab, "alice", "alice-secret-0123456789")
    reads = [
        f"/v1/job/{job_id}",
        f"/v1/result/{job_id}",
        f"/v1/result/{job_id}/log/output",
        f"/v1/result/{job_id}/artifact",
        f"/v1/job/{job_id}/position",
        "/v1/agents/data",
        "/v1/agents/data/dut-1",
        "/v1/queues",
        "/v1/queues/lab/agents",
        "/v1/queues/lab/jobs",
        "/v1/job/search",
        "/v1/restricted-queues",
        "/agents",
        "/agents/dut-1",
        "/queues",
        f"/jobs/{job_id}",
    ]
    for path in reads:
        # Clients only: anonymous callers read as upstream's contributors (a shared token
        # closes reads, below); no read ever shows the secret's value.
        resp = anonymous.get(path)
        assert resp.status_code in (200, 204, 404, 410), path
        assert b"hunter2" not in resp.data
    assert anonymous.get("/v1").status_code == 200  # the health check stays open
    # Readers with a token see the secret's path, never its value.
    popped = dut1.get("/v1/job", query_string={"queue": "lab"}).get_json()
    assert popped["test_data"]["secrets"] == {"KEY": "hunter2-value"}
    for path in reads:
        resp = anonymous.get(path, headers=alice)
        assert resp.status_code in (200, 204, 410), path
        assert b"hunter2" not in resp.data, path
    assert anonymous.get(f"/v1/job/{job_id}", headers=alice).get_json()["test_data"]["secrets"] == {
        "KEY": "lab/key"
    }
    # Another agent cannot fetch the job's attachments or pop it again.
    assert dut2.get("/v1/job", query_string={"queue": "lab"}).status_code == 204


def test_case1_shared_token_reads_and_basic_auth_for_browsers(tmp_path: Path):
    app = create_app(tmp_path / "s.db", Policy(token=SHARED))
    c = app.test_client()
    resp = c.get("/agents")
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Basic")
    basic = base64.b64encode(f"me:{SHARED}".encode()).decode()
    assert c.get("/agents", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    assert c.get("/v1/agents/data", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    wrong = base64.b64encode(b"me:guess").decode()
    assert c.get("/agents", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    assert c.get("/v1/agents/data", headers=BEARER).status_code == 200
    # The document of the API is no data: open.
    assert c.get("/v1/openapi.json").status_code == 200


def test_case1_public_pages_open_agents_but_no_job(tmp_path: Path):
    app = create_app(tmp_path / "p.db", Policy(token=SHARED, public_pages=True))
    c = app.test_client()
    job = {"job_queue": "lab", "name": "secret-project"}
    job_id = c.post("/v1/job", json=job, headers=BEARER).get_json()["job_id"]
    assert c.get("/agents").status_code == 200
    queues = c.get("/queues").get_data(as_text=True)
    assert job_id in queues and "secret-project" not in queues  # the job's data stays closed
    assert "secret-project" in c.get("/queues", headers=BEARER).get_data(as_text=True)
    assert c.get(f"/jobs/{job_id}").status_code == 401
    assert c.get(f"/jobs/{job_id}/live").status_code == 401
    assert c.get("/v1/agents/data").status_code == 401  # the API stays closed


def test_open_mode_stays_open(tmp_path: Path):
    c = create_app(tmp_path / "o.db").test_client()
    for path in ("/v1/agents/data", "/agents", "/v1/queues"):
        assert c.get(path).status_code == 200


# -- case 4: who writes a job, and which states ----------------------------------------
def test_case4_agents_write_only_the_jobs_they_hold(lab):
    job_id = submit_with_secret(lab)
    dut1, dut2 = agent(lab, "dut-1"), agent(lab, "dut-2")
    alice = login(lab, "alice", "alice-secret-0123456789")
    # Not handed out yet: nobody holds it.
    assert dut2.post(f"/v1/result/{job_id}", json={"job_state": "setup"}).status_code == 403
    assert dut1.get("/v1/job", query_string={"queue": "lab"}).status_code == 200
    writes: list[tuple[str, str, dict[str, Any]]] = [
        ("post", f"/v1/result/{job_id}", {"json": {"job_state": "setup"}}),
        ("post", f"/v1/result/{job_id}/log/output", {"json": FRAGMENT | {"log_data": "x"}}),
        ("post", f"/v1/job/{job_id}/events", {"json": {"job_status_webhook": "h"}}),
        (
            "post",
            f"/v1/result/{job_id}/artifact",
            {"data": {"file": (io.BytesIO(b"tgz"), "f", "application/gzip")}},
        ),
    ]
    for method, path, kwargs in writes:
        assert getattr(dut2, method)(path, **kwargs).status_code == 403, path
    # A caller with dut-2's credential naming itself dut-1 is still not the holder.
    dut2.set_cookie("agent_name", "dut-1")
    assert dut2.post(f"/v1/result/{job_id}", json={"job_state": "setup"}).status_code == 403
    # A contributor is no agent at all (upstream's role gate).
    c = lab.test_client()
    assert c.post(f"/v1/result/{job_id}", json={}, headers=alice).status_code == 403
    for method, path, kwargs in writes:
        if "data" in kwargs:
            kwargs = {"data": {"file": (io.BytesIO(b"tgz"), "f", "application/gzip")}}
        assert getattr(dut1, method)(path, **kwargs).status_code == 200, path
    assert c.get(f"/v1/result/{job_id}", headers=alice).get_json()["job_state"] == "setup"
    # The holder's successor (same credential, no cookie yet) may close the job.
    successor = lab.test_client()
    successor.environ_base["HTTP_AUTHORIZATION"] = login(lab, "dut-1", "dut-1-secret-0123456789")[
        "Authorization"
    ]
    done = {"job_state": "complete", "status": {"test": 100}}
    assert successor.post(f"/v1/result/{job_id}", json=done).status_code == 200


def test_case4_shared_token_agents_are_told_apart_by_name(tmp_path: Path):
    app = create_app(tmp_path / "s.db", Policy(token=SHARED))
    a, b = app.test_client(), app.test_client()
    for c, name in ((a, "a"), (b, "b")):
        c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {SHARED}"
        c.post(f"/v1/agents/data/{name}", json={"queues": ["lab"]})
    job_id = a.post("/v1/job", json={"job_queue": "lab"}).get_json()["job_id"]
    assert a.get("/v1/job", query_string={"queue": "lab"}).status_code == 200
    assert b.post(f"/v1/result/{job_id}", json={"job_state": "setup"}).status_code == 403
    assert a.post(f"/v1/result/{job_id}", json={"job_state": "setup"}).status_code == 200


def ran_job(app) -> tuple[FlaskClient, str]:
    c = app.test_client()
    c.post("/v1/agents/data/a", json={"queues": ["lab"]})
    job_id = c.post("/v1/job", json={"job_queue": "lab"}).get_json()["job_id"]
    assert c.get("/v1/job", query_string={"queue": "lab"}).status_code == 200
    return c, job_id


def test_case4_job_state_moves_only_forward(tmp_path: Path):
    app = create_app(tmp_path / "f.db")
    c, job_id = ran_job(app)
    post = lambda state: c.post(f"/v1/result/{job_id}", json={"job_state": state}).status_code  # noqa: E731
    assert post("bogus-state") == 400
    for state in ("setup", "setup", "provision", "test", "allocate", "allocated", "reserve"):
        assert post(state) == 200, state
    assert post("provision") == 400  # backwards
    assert post("waiting") == 400
    assert post("complete") == 200
    for state in ("waiting", "running", "setup", "reserve", "cancelled"):
        assert post(state) == 400, state
    assert post("complete") == 200  # the agent's final post, repeated, is harmless
    assert c.get(f"/v1/result/{job_id}").get_json()["job_state"] == "complete"
    # The completed job is never handed out again.
    assert c.get("/v1/job", query_string={"queue": "lab"}).status_code == 204
    # A cancel sticks: the agent's later posts change nothing.
    c2, other = ran_job(app)
    assert c2.post(f"/v1/job/{other}/action", json={"action": "cancel"}).status_code == 200
    assert c2.post(f"/v1/result/{other}", json={"job_state": "complete"}).status_code == 200
    assert c2.get(f"/v1/result/{other}").get_json()["job_state"] == "cancelled"


@pytest.mark.parametrize(
    "spelling",
    [
        lambda u: "{" + u + "}",
        lambda u: "urn:uuid:" + u,
        lambda u: u.replace("-", ""),
        lambda u: u.upper(),
    ],
)
def test_case4_nothing_stored_for_other_spellings_or_unknown_jobs(tmp_path: Path, spelling):
    app = create_app(tmp_path / "u.db")
    c, job_id = ran_job(app)
    store = app.extensions["tf_store"]
    for target, status in ((spelling(job_id), 400), (str(uuid.uuid4()), 404)):
        assert c.post(f"/v1/result/{target}", json={"job_state": "setup"}).status_code == status
        log = FRAGMENT | {"log_data": "x"}
        assert c.post(f"/v1/result/{target}/log/output", json=log).status_code == status
        upload = {"file": (io.BytesIO(b"tgz"), "f", "application/gzip")}
        assert c.post(f"/v1/result/{target}/artifact", data=upload).status_code == status
    conn = store.conn()
    assert conn.execute("SELECT COUNT(*) FROM logs").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM blobs").fetchone()[0] == 0
    assert c.get(f"/v1/result/{job_id}").get_json()["job_state"] == "running"


# -- case 5: no 500 from deep nesting or huge integers -----------------------------------
JSON_POSTS = [
    "/v1/job",
    "/v1/result/{job}",
    "/v1/result/{job}/log/output",
    "/v1/job/{job}/events",
    "/v1/job/{job}/action",
    "/v1/agents/data/a",
    "/v1/agents/queues",
    "/v1/agents/images",
    "/v1/agents/provision_logs/a",
    "/v1/oauth2/refresh",
]


def test_case5_deep_nesting_is_400_everywhere(tmp_path: Path):
    app = create_app(tmp_path / "n.db")
    c, job_id = ran_job(app)
    deep = ("[" * 20_000 + "]" * 20_000).encode()  # past any recursion limit
    mixed = b'{"job_queue": ' + b'{"a": ' * 50 + b"1" + b"}" * 50 + b"}"
    for path in JSON_POSTS:
        for body in (deep, mixed):
            resp = c.post(path.format(job=job_id), data=body, content_type="application/json")
            assert resp.status_code == 400, (path, resp.status_code)


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 10**400])
def test_case5_integers_past_64_bits_are_400(tmp_path: Path, number):
    app = create_app(tmp_path / "i.db")
    c, job_id = ran_job(app)
    bodies = [
        ("/v1/job", {"job_queue": "lab", "job_priority": number}),
        ("/v1/agents/provision_logs/a", {"job_id": job_id, "exit_code": number}),
        (f"/v1/result/{job_id}", {"status": {"test": number}}),
        (f"/v1/result/{job_id}/log/output", FRAGMENT | {"fragment_number": number, "log_data": ""}),
    ]
    for path, body in bodies:
        raw = json.dumps(body).encode()
        resp = c.post(path, data=raw, content_type="application/json")
        assert resp.status_code == 400, path
    resp = c.get(f"/v1/result/{job_id}/log/output", query_string={"start_fragment": str(number)})
    assert resp.status_code == 400
    for raw in (b"NaN", b'{"job_queue": Infinity}'):
        assert c.post("/v1/job", data=raw, content_type="application/json").status_code == 400


# -- case 6: size limits ---------------------------------------------------------------
def test_case6_big_bodies_are_413_and_long_strings_400(tmp_path: Path):
    limits = Limits(
        body_bytes=4096,
        job_bytes=8192,
        log_bytes=8192,
        agent_bytes=8192,
        artifact_bytes=8192,
        attachments_bytes=8192,
        text_chars=256,
    )
    app = create_app(tmp_path / "l.db", Policy(limits=limits))
    c, job_id = ran_job(app)
    big = "x" * 20_000
    assert c.post("/v1/job", json={"job_queue": "lab", "name": big}).status_code == 413
    log = FRAGMENT | {"log_data": big}
    assert c.post(f"/v1/result/{job_id}/log/output", json=log).status_code == 413
    upload = {"file": (io.BytesIO(b"x" * 20_000), "f", "application/gzip")}
    assert c.post(f"/v1/result/{job_id}/artifact", data=upload).status_code == 413
    assert c.post("/v1/agents/data/a", json={"comment": big}).status_code == 413
    # Within the body limit, an agent's strings are still short texts.
    resp = c.post("/v1/agents/data/a", json={"comment": "y" * 1000})
    assert resp.status_code == 400
    assert c.post("/v1/agents/queues", json={"q": big}).status_code == 413
    assert c.get("/v1/agents/data/" + "n" * 300).status_code == 400
    assert c.get("/v1/queues/wait_times", query_string={"queue": big}).status_code == 400
    job2 = c.post("/v1/job", json={"job_queue": "lab", "test_data": {"attachments": []}})
    attach = {"file": (io.BytesIO(b"x" * 20_000), "f", "application/gzip")}
    path = f"/v1/job/{job2.get_json()['job_id']}/attachments"
    assert c.post(path, data=attach).status_code == 413
    # The agents page stays small.
    assert len(c.get("/agents").data) < 100_000


def test_case6_default_limits_refuse_a_50_mb_agent_comment(tmp_path: Path):
    c = create_app(tmp_path / "d.db").test_client()
    body = json.dumps({"comment": "x" * (50 * 1024 * 1024)}).encode()
    resp = c.post("/v1/agents/data/a", data=body, content_type="application/json")
    assert resp.status_code == 413
    assert c.get("/v1/agents/data/a").status_code == 404  # nothing stored
    job = json.dumps({"job_queue": "lab", "name": "x" * (50 * 1024 * 1024)}).encode()
    assert c.post("/v1/job", data=job, content_type="application/json").status_code == 413


def test_limits_parse_from_the_command_line():
    limits = Limits().with_settings(["artifact_bytes=1G", "text-chars=8192", "job_bytes=64k"])
    assert limits.artifact_bytes == 1024**3 and limits.text_chars == 8192
    assert limits.job_bytes == 64 * 1024
    for bad in ("nope=1", "depth=0", "depth=-3", "depth=x"):
        with pytest.raises(ValueError):
            Limits().with_settings([bad])
