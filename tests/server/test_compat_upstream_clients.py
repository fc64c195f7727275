"""The requests upstream's `testflinger-cli` and `testflinger-agent` make, replayed against
the local server, checked against the answers upstream's server (1.5.0) gives.

Upstream's CLI is not on PyPI, so this speaks HTTP as it does: the preamble, the bodies, the
status codes and body shapes of ../shared/testflinger-cli-contract.md, command by command.
"""

from __future__ import annotations

import base64
import io
import json
import re
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from fixtures_server import Clock

from multiagent.server.accounts import Accounts
from multiagent.server.app import create_app

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PHASES = ["setup", "provision", "firmware_update", "test", "allocate", "reserve", "cleanup"]


def claims(jwt: str) -> dict:
    """What upstream's CLI reads from a token: the payload, unverified."""
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture
def lab(tmp_path: Path, clock: Clock):
    """A lab server: an admin, a contributor with limits, an agent with its token file."""
    app = create_app(tmp_path / "lab.db", clock=clock)
    accounts: Accounts = app.extensions["tf_accounts"]
    accounts.save("admin-1", {"role": "admin"}, secret="admin-secret-0123456789")
    accounts.save(
        "alice",
        {"role": "contributor", "max_priority": {"*": 10}, "max_reservation_time": {"lab": 86400}},
        secret="alice-secret-0123456789",
    )
    accounts.save("dut-1", {"role": "agent"}, secret="agent-secret-0123456789")
    return app


def login(client, user: str, secret: str) -> dict:
    resp = client.post("/v1/oauth2/token", auth=(user, secret))
    assert resp.status_code == 200, resp.data
    return resp.get_json()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


class Agent:
    """Upstream's agent: refresh from its token file, register (cookie), then poll."""

    def __init__(self, app, refresh_token: str, name: str = "dut-1") -> None:
        self.http = app.test_client()
        self.name = name
        resp = self.http.post("/v1/oauth2/refresh", json={"refresh_token": refresh_token})
        assert resp.status_code == 200
        assert set(resp.get_json()) == {"access_token", "token_type", "expires_in"}
        self.headers = bearer(resp.get_json()["access_token"])
        assert self.post(
            f"/v1/agents/data/{name}", {"state": "waiting", "comment": ""}
        ).get_json() == {"status": "OK"}
        body = {"location": "rack 1", "queues": ["lab"], "provision_type": "noprovision"}
        assert self.post(f"/v1/agents/data/{name}", body).status_code == 200

    def post(self, path: str, body: dict):
        return self.http.post(path, json=body, headers=self.headers)

    def get(self, path: str, **kwargs):
        return self.http.get(path, headers=self.headers, **kwargs)


@pytest.fixture
def agent(lab) -> Agent:
    token = Accounts(lab.extensions["tf_store"]).mint_refresh("dut-1")
    return Agent(lab, token)


# -- login, tokens, roles ------------------------------------------------------------
def test_login_and_token_answers(lab, clock):
    cli = lab.test_client()
    # An anonymous CLI run starts with the OIDC probe: 404 means "stay anonymous".
    assert cli.post("/oidc/auth-init").status_code == 404
    answer = login(cli, "alice", "alice-secret-0123456789")
    assert set(answer) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 600
    assert len(answer["refresh_token"]) == 64
    token = claims(answer["access_token"])
    assert token["sub"] == "access_token" and token["exp"] - token["iat"] == 600
    assert token["permissions"]["role"] == "contributor"
    assert token["permissions"]["client_id"] == "alice"
    assert "client_secret_hash" not in token["permissions"]
    for auth, message in (
        (None, "No authorization header specified"),
        (("alice", ""), "Client id and key must be specified in authorization header"),
        (("alice", "wrong-secret-0123456789"), "Invalid client id or client key"),
    ):
        resp = cli.post("/v1/oauth2/token", auth=auth)
        assert resp.status_code == 401 and resp.get_data(as_text=True) == message
    # Refresh: no rotation, the same shape without a refresh token.
    again = cli.post("/v1/oauth2/refresh", json={"refresh_token": answer["refresh_token"]})
    assert again.status_code == 200 and "refresh_token" not in again.get_json()
    assert cli.post("/v1/oauth2/refresh", json={"refresh_token": "x" * 64}).get_json() == {
        "message": "Invalid refresh token.",
        "detail": {},
    }
    assert cli.post("/v1/oauth2/refresh", json={}).status_code == 422
    # An expired access token is 401 (the CLI and the agent refresh and replay once).
    clock.advance(601 + 5)
    resp = cli.get("/v1/agents/data", headers=bearer(answer["access_token"]))
    assert resp.status_code == 401 and resp.get_json()["message"] == "Token has expired"
    # Refresh tokens expire after 6 days and can be revoked.
    admin = bearer(login(cli, "admin-1", "admin-secret-0123456789")["access_token"])
    fresh = login(cli, "alice", "alice-secret-0123456789")["refresh_token"]
    revoke = cli.post("/v1/oauth2/revoke", json={"refresh_token": fresh}, headers=admin)
    assert revoke.status_code == 200 and revoke.get_json() == {"status": "OK"}
    gone = cli.post("/v1/oauth2/refresh", json={"refresh_token": fresh})
    assert gone.status_code == 400 and gone.get_json()["message"] == "Refresh token revoked."
    clock.advance(6 * 86400)
    old = cli.post("/v1/oauth2/refresh", json={"refresh_token": answer["refresh_token"]})
    assert old.status_code == 400 and old.get_json()["message"] == "Refresh token expired"


def test_forged_tokens_and_role_gates(lab, agent):
    cli = lab.test_client()
    admin = bearer(login(cli, "admin-1", "admin-secret-0123456789")["access_token"])
    jwt = admin["Authorization"].split()[1]
    head, payload, sig = jwt.split(".")
    forged = f"{head}.{payload}.{sig[:-2]}AA"
    resp = cli.get("/v1/agents/data", headers=bearer(forged))
    assert resp.status_code == 403 and resp.get_json()["message"] == "Invalid Token signature"
    # Endpoint access is an allow-list: an admin is no agent.
    resp = cli.get("/v1/job?queue=lab", headers=admin)
    assert resp.status_code == 403
    assert resp.get_json()["message"] == "Specified action requires role: agent"
    # Anonymous callers (upstream without OIDC) are contributors.
    assert cli.get("/v1/agents/data").status_code == 200
    assert cli.get("/v1/client-permissions").status_code == 403
    # 403 bodies are JSON (a text 403 makes upstream's CLI say "VPN required").
    assert cli.get("/v1/client-permissions").is_json


# -- submit, poll, status, results, artifacts, cancel --------------------------------
def test_submit_poll_and_results(lab, agent):
    cli = lab.test_client()
    unknown = cli.get("/v1/queues/nowhere/agents")
    assert unknown.status_code == 404
    assert unknown.get_json()["message"] == "Queue 'nowhere' does not exist."
    listening = cli.get("/v1/queues/lab/agents").get_json()
    assert listening == [
        {
            "name": "dut-1",
            "state": "waiting",
            "queues": ["lab"],
            "location": "rack 1",
            "provision_type": "noprovision",
            "comment": "",
        }
    ]
    job = {
        "job_queue": "lab",
        "test_data": {"test_cmds": "echo hi", "attachments": [{"agent": "f"}]},
    }
    resp = cli.post("/v1/job", json=job)
    assert resp.status_code == 200 and list(resp.get_json()) == ["job_id"]
    job_id = resp.get_json()["job_id"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("test/f")
        tar.addfile(info, io.BytesIO(b""))
    upload = cli.post(
        f"/v1/job/{job_id}/attachments",
        data={"file": (io.BytesIO(buf.getvalue()), "attachments.tar.gz", "application/x-gzip")},
    )
    assert upload.status_code == 200 and upload.get_data(as_text=True) == "OK"
    shown = cli.get(f"/v1/job/{job_id}").get_json()
    assert "attachments_status" not in shown and shown["exclude_agents"] == []
    assert cli.get(f"/v1/result/{job_id}").get_json() == {"job_state": "waiting"}
    position = cli.get(f"/v1/job/{job_id}/position")
    assert position.status_code == 200 and position.get_data(as_text=True) == "0"
    log = cli.get(f"/v1/result/{job_id}/log/output", query_string={"start_fragment": 0})
    assert list(log.get_json()["output"]) == PHASES
    assert {e["last_fragment_number"] for e in log.get_json()["output"].values()} == {-1}
    # queue-status -v
    jobs = cli.get("/v1/queues/lab/jobs").get_json()
    assert jobs[0]["job_id"] == job_id and set(jobs[0]) == {
        "job_id",
        "created_at",
        "job_state",
        "job_queue",
    }
    assert ISO_Z.match(jobs[0]["created_at"])
    assert cli.get("/v1/queues/empty/jobs").status_code == 204
    # The agent takes it, runs it, reports.
    handed = agent.get("/v1/job", query_string=[("queue", "lab")]).get_json()
    assert handed["job_id"] == job_id and handed["attachments_status"] == "complete"
    assert agent.get(f"/v1/job/{job_id}/attachments").status_code == 200
    for phase in ("setup", "provision", "test"):
        assert agent.post(f"/v1/result/{job_id}", {"job_state": phase}).status_code == 200
    fragment = {
        "fragment_number": 0,
        "timestamp": "2026-05-28T20:30:00.123456+00:00",
        "phase": "test",
        "log_data": "hi\n",
    }
    assert agent.post(f"/v1/result/{job_id}/log/output", fragment).status_code == 200
    artifact = agent.http.post(
        f"/v1/result/{job_id}/artifact",
        data={"file": (io.BytesIO(b"tgz"), "file", "application/x-gzip")},
        headers=agent.headers,
    )
    assert artifact.status_code == 200
    prov = {"job_id": job_id, "exit_code": 0, "detail": "provision_success"}
    assert agent.post("/v1/agents/provision_logs/dut-1", prov).status_code == 200
    final = {"status": {"setup": 0, "provision": 0, "test": 0}, "job_state": "complete"}
    assert agent.post(f"/v1/result/{job_id}", final).status_code == 200
    result = cli.get(f"/v1/result/{job_id}").get_json()
    assert result == {
        "setup_status": 0,
        "provision_status": 0,
        "test_status": 0,
        "test_output": "hi\n",
        "job_state": "complete",
    }
    assert cli.get(f"/v1/result/{job_id}/artifact").data == b"tgz"
    assert cli.get(f"/v1/job/{job_id}/position").status_code == 410
    # status / results / artifacts / show for unknown and bad ids.
    missing = str(uuid.uuid4())
    for path in ("/v1/result/{}", "/v1/result/{}/artifact", "/v1/job/{}"):
        assert cli.get(path.format(missing)).status_code == 204
        assert cli.get(path.format("not-a-uuid")).status_code == 400
    # cancel: a finished job and an unknown one are both 400, which the CLI reports.
    for target in (job_id, missing):
        resp = cli.post(f"/v1/job/{target}/action", json={"action": "cancel"})
        assert resp.status_code == 400
    other = cli.post("/v1/job", json={"job_queue": "lab"}).get_json()["job_id"]
    ok = cli.post(f"/v1/job/{other}/action", json={"action": "cancel"})
    assert ok.status_code == 200 and ok.get_data(as_text=True) == "OK"
    # The wait until the agent took the first job is in the queue's wait times.
    waits = cli.get("/v1/queues/wait_times", query_string={"queue": "lab"}).get_json()
    assert set(waits["lab"]) == {"5", "10", "50", "90", "95"}
    found = cli.get("/v1/job/search", query_string={"state": "cancelled"}).get_json()
    assert [j["job_id"] for j in found] == [other]
    assert cli.get("/v1/job/search", query_string={"state": "waiting"}).status_code == 422


def test_submit_limits_and_schema(lab, agent):
    cli = lab.test_client()
    alice = bearer(login(cli, "alice", "alice-secret-0123456789")["access_token"])
    anon = cli.post("/v1/job", json={"job_queue": "lab", "job_priority": 50})
    assert anon.status_code == 401
    assert anon.get_json()["message"] == "Authentication required for setting priority: 50"
    high = cli.post("/v1/job", json={"job_queue": "lab", "job_priority": 50}, headers=alice)
    assert high.status_code == 403
    assert high.get_json()["message"] == "Not enough permissions to push to lab with priority 50"
    assert (
        cli.post(
            "/v1/job", json={"job_queue": "lab", "job_priority": 10}, headers=alice
        ).status_code
        == 200
    )
    long = {"job_queue": "lab", "reserve_data": {"timeout": "7h", "ssh_keys": ["lp:me"]}}
    resp = cli.post("/v1/job", json=long)
    assert resp.status_code == 401
    assert resp.get_json()["message"] == "Authentication required for setting timeout: 25200"
    stored = cli.post("/v1/job", json=long, headers=alice).get_json()["job_id"]
    assert cli.get(f"/v1/job/{stored}").get_json()["reserve_data"]["timeout"] == 25200
    # reserve: images, then the job the CLI builds from `-i myimage`.
    assert cli.get("/v1/agents/images/lab").get_json() == {}
    reserve = {
        "job_queue": "lab",
        "provision_data": {"url": "myimage"},
        "reserve_data": {"ssh_keys": ["lp:me"], "timeout": 3600},
    }
    resp = cli.post("/v1/job", json=reserve)
    assert resp.status_code == 422
    assert resp.get_json() == {
        "message": "Validation error",
        "detail": {"json": {"provision_data": {"_schema": ["Invalid provision data schema."]}}},
    }
    reserve["provision_data"] = {"distro": "noble"}
    assert cli.post("/v1/job", json=reserve).status_code == 200
    # Bodies: malformed JSON is 400, a body that is not JSON reads as {} (422).
    bad = cli.post("/v1/job", data="{oops", content_type="application/json")
    assert bad.status_code == 400 and bad.get_json()["message"] == "Bad Request"
    text = cli.post("/v1/job", data="job_queue=lab", content_type="text/plain")
    assert text.status_code == 422 and "job_queue" in text.get_json()["detail"]["json"]
    assert cli.put("/v1/job").status_code == 405 and cli.put("/v1/job").is_json


# -- agents, admin, restricted queues ------------------------------------------------
def test_agents_and_admin_commands(lab, agent):
    cli = lab.test_client()
    agents = cli.get("/v1/agents/data").get_json()
    assert agents[0]["name"] == "dut-1" and agents[0]["restricted_to"] == {}
    assert {"name", "state", "location", "provision_type", "comment", "job_id", "queues"} <= set(
        agents[0]
    ) | {"job_id"}
    missing = cli.get("/v1/agents/data/nobody")
    assert missing.status_code == 404 and missing.get_json() == {}
    admin = bearer(login(cli, "admin-1", "admin-secret-0123456789")["access_token"])
    assert claims(admin["Authorization"].split()[1])["permissions"]["role"] == "admin"
    # admin set agent-status --status offline
    body = {"state": "offline", "comment": "Set to offline by admin-1. Reason: cable"}
    resp = cli.post("/v1/agents/data/dut-1", json=body, headers=admin)
    assert resp.status_code == 200 and resp.get_json() == {"status": "OK"}
    assert cli.get("/v1/agents/data/dut-1").get_json()["state"] == "offline"
    # admin get / set / delete client-permissions
    listing = cli.get("/v1/client-permissions", headers=admin).get_json()
    assert {c["client_id"] for c in listing} == {"admin-1", "alice", "dut-1"}
    assert all("secret" not in json.dumps(c) for c in listing)
    created = cli.put(
        "/v1/client-permissions/bob",
        json={"client_secret": "bob-secret-0123456789", "role": "manager"},
        headers=admin,
    )
    assert created.status_code == 200
    assert created.get_data(as_text=True) == "Created permissions for client 'bob'"
    updated = cli.put("/v1/client-permissions/bob", json={"max_priority": {"*": 5}}, headers=admin)
    assert updated.get_data(as_text=True) == "Updated permissions for client 'bob'"
    assert cli.get("/v1/client-permissions/bob", headers=admin).get_json() == {
        "client_id": "bob",
        "role": "manager",
        "max_priority": {"*": 5},
    }
    bob = bearer(login(cli, "bob", "bob-secret-0123456789")["access_token"])
    promote = cli.put("/v1/client-permissions/bob", json={"role": "admin"}, headers=bob)
    assert promote.status_code == 403
    assert "insufficient permissions to assign role 'admin'" in promote.get_json()["message"]
    new = cli.put("/v1/client-permissions/carol", json={"role": "agent"}, headers=admin)
    assert new.status_code == 400
    assert (
        cli.put("/v1/client-permissions/bob", json={"client_id": "x"}, headers=admin).status_code
        == 422
    )
    protected = cli.put("/v1/client-permissions/testflinger-admin", json={}, headers=admin)
    assert protected.status_code == 422
    assert cli.delete("/v1/client-permissions/bob", headers=bob).status_code == 403
    deleted = cli.delete("/v1/client-permissions/bob", headers=admin)
    assert deleted.status_code == 200 and deleted.get_data(as_text=True) == "OK"
    assert cli.get("/v1/client-permissions/bob", headers=admin).status_code == 404


def test_restricted_queues(lab, agent):
    cli = lab.test_client()
    admin = bearer(login(cli, "admin-1", "admin-secret-0123456789")["access_token"])
    nobody = cli.post("/v1/restricted-queues/nowhere", json={"client_id": "alice"}, headers=admin)
    assert nobody.get_json()["message"] == "Error: No agent is associated with the specified queue."
    assert (
        cli.post(
            "/v1/restricted-queues/lab", json={"client_id": "alice"}, headers=admin
        ).status_code
        == 200
    )
    assert cli.get("/v1/restricted-queues").get_json() == [{"queue": "lab", "owners": ["alice"]}]
    assert agent.get("/v1/agents/data/dut-1").get_json()["restricted_to"] == {"lab": ["alice"]}
    anon = cli.post("/v1/job", json={"job_queue": "lab"})
    assert anon.status_code == 401
    assert anon.get_json()["message"] == "Authentication required to push to restricted queue: lab"
    # Limits come from the token: alice needs a new one to use the queue.
    alice = bearer(login(cli, "alice", "alice-secret-0123456789")["access_token"])
    assert cli.post("/v1/job", json={"job_queue": "lab"}, headers=alice).status_code == 200
    assert cli.post("/v1/job", json={"job_queue": "lab"}, headers=admin).status_code == 403
    lifted = cli.delete("/v1/restricted-queues/lab", json={"client_id": "alice"}, headers=admin)
    assert lifted.status_code == 200
    assert cli.get("/v1/restricted-queues/lab").status_code == 404


# -- secrets ---------------------------------------------------------------------------
def test_secret_write_and_hand_out(lab, agent, clock):
    cli = lab.test_client()
    alice = bearer(login(cli, "alice", "alice-secret-0123456789")["access_token"])
    resp = cli.put(
        "/v1/secrets/alice/lab/pw", json={"value": "hunter2", "expire_after": 60}, headers=alice
    )
    assert resp.status_code == 200
    assert resp.get_json()["expires_at"].endswith("+00:00")
    assert resp.get_json()["expires_at"].startswith("2026-05-28T20:27:40.")
    once = cli.put(
        "/v1/secrets/alice/token", json={"value": "t0k", "ephemeral": True}, headers=alice
    )
    assert once.get_json() == {"expires_at": None}
    other = cli.put("/v1/secrets/bob/x", json={"value": "v"}, headers=alice)
    assert other.status_code == 403
    assert other.get_json()["message"] == "'bob' doesn't match authenticated client id"
    assert cli.put("/v1/secrets/alice/x", json={"value": "v"}).status_code == 401
    assert cli.put("/v1/secrets/alice/x", json={"value": ""}, headers=alice).status_code == 422
    assert (
        agent.http.put(
            "/v1/secrets/dut-1/x", json={"value": "v"}, headers=agent.headers
        ).status_code
        == 403
    )
    job: dict[str, Any] = {
        "job_queue": "lab",
        "test_data": {"test_cmds": "env", "secrets": {"PW": "lab/pw"}},
    }
    assert cli.post("/v1/job", json=job).get_json()["message"] == "Validation error"
    job["test_data"]["secrets"]["TOKEN"] = "token"
    job["test_data"]["secrets"]["GONE"] = "missing"
    refused = cli.post("/v1/job", json=job, headers=alice)
    assert refused.status_code == 422
    assert "Inaccessible secret paths: missing" in json.dumps(refused.get_json())
    del job["test_data"]["secrets"]["GONE"]
    job_id = cli.post("/v1/job", json=job, headers=alice).get_json()["job_id"]
    shown = cli.get(f"/v1/job/{job_id}").get_json()
    assert shown["test_data"]["secrets"] == {"PW": "lab/pw", "TOKEN": "token"}
    assert "client_id" not in shown
    handed = agent.get("/v1/job", query_string={"queue": "lab"}).get_json()
    assert handed["test_data"]["secrets"] == {"PW": "hunter2", "TOKEN": "t0k"}
    # The ephemeral secret was consumed by that hand-out.
    assert Accounts(lab.extensions["tf_store"]).missing_secrets("alice", ["token"]) == ["token"]
    deleted = cli.delete("/v1/secrets/alice/lab/pw", headers=alice)
    assert deleted.status_code == 200 and deleted.get_data(as_text=True) == "OK"
    assert cli.delete("/v1/secrets/alice/lab/pw", headers=alice).status_code == 200


def test_agent_without_token_is_refused_on_a_lab_server(lab):
    anon = lab.test_client()
    resp = anon.post("/v1/agents/data/dut-9", json={"state": "waiting"})
    assert resp.status_code == 403
    assert resp.get_json()["message"] == "Specified action requires role: admin, manager, agent"
    assert anon.get("/v1/job?queue=lab").status_code == 403
