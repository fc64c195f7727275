"""A job's attachments are its submitter's: only the client that submitted it (an anonymous
submitter: the holder of the job's upload credential, a cookie of the submit's answer)
uploads them, once. Everyone else is refused (403, 409), and nothing changes."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from fixtures_server import tar_gz, tar_member
from flask.testing import FlaskClient

from multiagent.fleet.cli import submit_command
from multiagent.server.accounts import Accounts
from multiagent.server.api import UPLOAD_COOKIE
from multiagent.server.app import create_app
from multiagent.server.db import Store
from multiagent.server.policy import Policy

SHARED = "s3cret-shared-token"
JOB = {"job_queue": "lab", "test_data": {"test_cmds": "x", "attachments": [{"agent": "f"}]}}
OWNERS = tar_gz({"test/f": b"the owner's\n"})
SUBSTITUTE = tar_gz({"test/f": b"someone else's\n"})


def clients_app(tmp_path: Path):
    app = create_app(tmp_path / "lab.db", Policy(any_provision_data=True))
    accounts = Accounts(app.extensions["tf_store"])
    for name, role in (("alice", "contributor"), ("bob", "contributor"), ("boss", "admin")):
        accounts.save(name, {"role": role}, secret=f"{name}-secret-0123456789")
    accounts.save("dut-1", {"role": "agent"}, secret="dut-1-secret-0123456789")
    return app


def as_client(app, name: str) -> FlaskClient:
    c = app.test_client()
    resp = c.post("/v1/oauth2/token", auth=(name, f"{name}-secret-0123456789"))
    assert resp.status_code == 200
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {resp.get_json()['access_token']}"
    return c


def with_token(app) -> FlaskClient:
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {SHARED}"
    return c


def upload(c: FlaskClient, job_id: str, archive: bytes) -> int:
    data = {"file": (io.BytesIO(archive), "a.tar.gz", "application/x-gzip")}
    return c.post(f"/v1/job/{job_id}/attachments", data=data).status_code


def submit(c: FlaskClient) -> str:
    resp = c.post("/v1/job", json=JOB)
    assert resp.status_code == 200, resp.get_json()
    assert list(resp.get_json()) == ["job_id"]  # upstream's answer, unchanged
    return resp.get_json()["job_id"]


def stored(app, job_id: str) -> bytes | None:
    return app.extensions["tf_store"].get_blob(job_id, "attachments")


def test_a_clients_job_takes_attachments_from_that_client_only_and_once(tmp_path: Path):
    app = clients_app(tmp_path)
    alice = as_client(app, "alice")
    job_id = submit(alice)
    outsiders = [as_client(app, "bob"), as_client(app, "boss"), app.test_client()]
    assert [upload(c, job_id, SUBSTITUTE) for c in outsiders] == [403, 403, 403]
    assert stored(app, job_id) is None
    assert upload(alice, job_id, OWNERS) == 200
    assert upload(alice, job_id, SUBSTITUTE) == 409
    assert [upload(c, job_id, SUBSTITUTE) for c in outsiders] == [403, 403, 403]
    assert stored(app, job_id) == OWNERS


def test_an_anonymous_job_takes_attachments_from_its_credential_only(tmp_path: Path):
    app = clients_app(tmp_path)
    submitter = app.test_client()
    job_id = submit(submitter)
    cookie = submitter.get_cookie(UPLOAD_COOKIE, path=f"/v1/job/{job_id}/attachments")
    assert cookie is not None and cookie.http_only
    # Another anonymous caller, a client, an admin, the credential of another job: refused.
    other_job = submit(app.test_client())
    stranger = app.test_client()
    stranger.set_cookie(UPLOAD_COOKIE, "guessed", path=f"/v1/job/{job_id}/attachments")
    thief = app.test_client()
    thief.set_cookie(UPLOAD_COOKIE, cookie.value, path=f"/v1/job/{other_job}/attachments")
    assert upload(thief, other_job, SUBSTITUTE) == 403
    for c in (app.test_client(), stranger, as_client(app, "alice"), as_client(app, "boss")):
        assert upload(c, job_id, SUBSTITUTE) == 403
    assert stored(app, job_id) is None and stored(app, other_job) is None
    assert upload(submitter, job_id, OWNERS) == 200
    assert upload(submitter, job_id, SUBSTITUTE) == 409
    assert stored(app, job_id) == OWNERS


def test_shared_token_server_anonymous_cannot_replace_and_uploads_once(tmp_path: Path):
    app = create_app(tmp_path / "s.db", Policy(token=SHARED, any_provision_data=True))
    operator = with_token(app)
    job_id = submit(operator)
    assert upload(app.test_client(), job_id, SUBSTITUTE) == 403
    assert upload(operator, job_id, OWNERS) == 200
    assert upload(operator, job_id, SUBSTITUTE) == 409
    assert upload(app.test_client(), job_id, SUBSTITUTE) == 403
    # An anonymous submitter's job is not the shared token's either: only its credential.
    anonymous = app.test_client()
    theirs = submit(anonymous)
    assert upload(with_token(app), theirs, SUBSTITUTE) == 403
    assert upload(anonymous, theirs, OWNERS) == 200
    assert stored(app, job_id) == OWNERS and stored(app, theirs) == OWNERS


def test_open_server_takes_one_upload_then_409(tmp_path: Path):
    app = create_app(tmp_path / "o.db", Policy(any_provision_data=True))
    job_id = submit(app.test_client())
    assert upload(app.test_client(), job_id, OWNERS) == 200
    assert upload(app.test_client(), job_id, SUBSTITUTE) == 409
    assert stored(app, job_id) == OWNERS


@pytest.mark.parametrize("state", ["running", "cancelled"])
def test_no_upload_once_the_job_left_waiting(tmp_path: Path, state: str):
    app = clients_app(tmp_path)
    alice = as_client(app, "alice")
    job_id = submit(alice)
    assert upload(alice, job_id, OWNERS) == 200
    if state == "cancelled":
        assert alice.post(f"/v1/job/{job_id}/action", json={"action": "cancel"}).status_code == 200
    else:
        dut = as_client(app, "dut-1")
        assert dut.post("/v1/agents/data/dut-1", json={"queues": ["lab"]}).status_code == 200
        assert dut.get("/v1/job", query_string={"queue": "lab"}).status_code == 200
    assert upload(alice, job_id, SUBSTITUTE) == 409
    assert upload(as_client(app, "bob"), job_id, SUBSTITUTE) == 403
    assert stored(app, job_id) == OWNERS


def test_tf_fleet_submit_uploads_with_the_jobs_credential(tf_server, tmp_path: Path):
    """`tf-fleet submit`, anonymous on a server with clients: its upload carries the
    submit's cookie, and nobody else's does."""
    store = Store(tf_server.db_path, clock=time.time)
    Accounts(store).save("alice", {"role": "contributor"}, secret="alice-secret-0123456789")
    (tmp_path / "data.txt").write_text("payload\n")
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        "job_queue: lab\ntest_data:\n  test_cmds: x\n  attachments:\n    - agent: data.txt\n"
    )
    result = CliRunner().invoke(submit_command, [str(job_file), "--server", tf_server.url])
    assert result.exit_code == 0, result.output
    job_id = result.output.splitlines()[0]
    archive = store.get_blob(job_id, "attachments")
    assert archive is not None
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        assert tar_member(tar, "test/data.txt") == b"payload\n"
    files = {"file": ("a.tar.gz", SUBSTITUTE, "application/x-gzip")}
    url = f"{tf_server.url}/v1/job/{job_id}/attachments"
    assert requests.post(url, files=files, timeout=10).status_code == 403
    assert store.get_blob(job_id, "attachments") == archive
    store.close()
