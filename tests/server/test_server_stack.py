"""What a caller sees of the server's stack (apiflask + marshmallow schemas, PyJWT,
werkzeug's Authorization parsing), through the Flask test client: tokens a client cannot
use, schema messages as upstream's server words them, the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from test_server_api import Clock

from multiagent.server.accounts import Accounts
from multiagent.server.app import create_app
from multiagent.server.policy import Policy


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lab(tmp_path: Path, clock: Clock):
    app = create_app(tmp_path / "lab.db", Policy(token="shared-token-0123456789"), clock=clock)
    Accounts(app.extensions["tf_store"]).save(
        "alice", {"role": "contributor"}, secret="alice-secret-0123456789"
    )
    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(app, claims: dict, key: bytes | None = None) -> str:
    key = key if key is not None else Accounts(app.extensions["tf_store"]).signing_key()
    return jwt.encode(claims, key, algorithm="HS256")


def refusal(resp) -> tuple[int, str]:
    return resp.status_code, resp.get_json()["message"]


OTHER_KEY = b"not-this-servers-key-0123456789-0123456789"


def test_tokens_a_client_cannot_use(lab, clock):
    c = lab.test_client()
    now = int(clock())
    claims = {"exp": now + 600, "iat": now, "sub": "access_token"}
    alice = {"client_id": "alice", "role": "contributor"}

    def read_with(token: str):
        return c.get("/v1/agents/data", headers=bearer(token))

    assert read_with(signed(lab, claims | {"permissions": alice})).status_code == 200
    # Each refusal is upstream's status and words: the CLI refreshes on 401 only.
    forged = signed(lab, claims | {"permissions": alice}, key=OTHER_KEY)
    assert refusal(read_with(forged)) == (403, "Invalid Token signature")
    no_permissions = signed(lab, claims)
    assert refusal(read_with(no_permissions)) == (403, "Token missing required claim: permissions")
    no_expiry = signed(lab, {"iat": now, "sub": "access_token", "permissions": alice})
    assert refusal(read_with(no_expiry)) == (403, "Token missing required claim: exp")
    assert refusal(read_with("not.a.jwt")) == (403, "Unable to decode token")
    expired = signed(lab, claims | {"permissions": alice, "exp": now - 10})
    assert refusal(read_with(expired)) == (401, "Token has expired")


def test_authorization_schemes(lab):
    c = lab.test_client()
    # The shared token as a bearer may do everything; a wrong one is no JWT either.
    assert (
        c.get("/v1/client-permissions", headers=bearer("shared-token-0123456789")).status_code
        == 200
    )
    assert refusal(c.get("/v1/agents/data", headers=bearer("shared-token-012345678X"))) == (
        403,
        "Unable to decode token",
    )
    # Another scheme carries no role; a browser's Basic counts on reads only.
    other = c.post("/v1/job", json={"job_queue": "lab"}, headers={"Authorization": "Token x"})
    assert other.status_code == 403 and other.is_json
    basic = c.get("/v1/agents/data", auth=("alice", "alice-secret-0123456789"))
    assert basic.status_code == 200
    wrong = c.get("/v1/agents/data", auth=("alice", "wrong-secret-0123456789"))
    assert refusal(wrong) == (401, "Invalid client id or client key")
    garbled = c.get("/v1/agents/data", headers={"Authorization": "Basic !!!"})
    assert refusal(garbled) == (401, "Malformed basic credentials")
    # Without a header a reader of a shared-token server is asked to authenticate.
    assert c.get("/v1/agents/data").status_code == 401


@pytest.fixture
def open_app(tmp_path: Path):
    return create_app(tmp_path / "open.db")


@pytest.mark.parametrize(
    "job,errors",
    [
        ({}, {"job_queue": ["Missing data for required field."]}),
        ({"job_queue": ""}, {"job_queue": ["Shorter than minimum length 1."]}),
        ({"job_queue": "q", "global_timeout": "5"}, {"global_timeout": ["Not a valid integer."]}),
        ({"job_queue": "q", "foo": 1}, {"foo": ["Unknown field."]}),
        ({"job_queue": "q", "test_data": {"foo": 1}}, {"test_data": {"foo": ["Unknown field."]}}),
        (
            {"job_queue": "q", "test_data": {"secrets": {"BAD-NAME": "a/b"}}},
            {
                "test_data": {
                    "secrets": {"BAD-NAME": {"key": ["String does not match expected pattern."]}}
                }
            },
        ),
        (
            {"job_queue": "q", "provision_data": {"url": "http://nodots/img"}},
            {"provision_data": {"_schema": ["Invalid provision data schema."]}},
        ),
        (
            {"job_queue": "q", "reserve_data": {"timeout": "soon"}},
            {"reserve_data": {"timeout": ["Not a valid duration."]}},
        ),
        (
            {"job_queue": "q", "reserve_data": {"ssh_keys": ["me"]}},
            {"reserve_data": {"ssh_keys": {"0": ["String does not match expected pattern."]}}},
        ),
    ],
)
def test_job_schema_messages(open_app, job, errors):
    resp = open_app.test_client().post("/v1/job", json=job)
    assert resp.status_code == 422
    assert resp.get_json() == {"message": "Validation error", "detail": {"json": errors}}


@pytest.mark.parametrize(
    "provision_data",
    [
        {},  # maas: every field optional
        {"url": "http://images.example.com/core.img"},  # cm3
        {"url": "http://localhost/img", "robot_tasks": ["boot"]},  # control host kvm
        {"preset": "p", "urls": ["http://a.example.com/x"]},  # control host iot
        None,
    ],
)
def test_device_schemas_accept_upstreams_shapes(open_app, provision_data):
    job = {"job_queue": "q", "provision_data": provision_data}
    assert open_app.test_client().post("/v1/job", json=job).status_code == 200


def test_any_provision_data_checks_attachments_only(tmp_path: Path):
    c = create_app(tmp_path / "any.db", Policy(any_provision_data=True)).test_client()
    homemade = {"url": "u", "firmware": {"any": "thing"}}
    assert c.post("/v1/job", json={"job_queue": "q", "provision_data": homemade}).status_code == 200
    bad = {"attachments": [{"local": "f"}]}
    resp = c.post("/v1/job", json={"job_queue": "q", "provision_data": bad})
    assert resp.status_code == 422
    assert resp.get_json()["detail"]["json"]["provision_data"]["attachments"]["0"] == {
        "agent": ["Missing data for required field."],
        "local": ["Unknown field."],
    }


def test_reservation_durations_are_stored_as_seconds(open_app):
    c = open_app.test_client()
    for given, seconds in (
        ("1h30m", 5400),
        ("90", 90),
        (45, 45),
        ("2 days", 172800),
        ("5min", 300),
    ):
        job = {"job_queue": "q", "reserve_data": {"timeout": given}}
        job_id = c.post("/v1/job", json=job).get_json()["job_id"]
        assert c.get(f"/v1/job/{job_id}").get_json()["reserve_data"] == {"timeout": seconds}
    for refused in ("soon", "1.5", "-5", 2.5):
        job = {"job_queue": "q", "reserve_data": {"timeout": refused}}
        assert c.post("/v1/job", json=job).status_code == 422, refused


def test_openapi_document(lab):
    # No token: it names endpoints and fields, never data.
    resp = lab.test_client().get("/v1/openapi.json")
    assert resp.status_code == 200
    doc = resp.get_json()
    assert doc["info"]["title"] == "tf-fleet server (Testflinger API v1)"
    assert {"/v1/job", "/v1/job/{job_id}", "/v1/result/{job_id}/log/{log_type}", "/agents"} <= set(
        doc["paths"]
    )
    body = doc["paths"]["/v1/job"]["post"]["requestBody"]["content"]["application/json"]
    schema = body["schema"]
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    assert schema["required"] == ["job_queue"] and "provision_data" in schema["properties"]

    def query(path: str) -> set[str]:
        params = doc["paths"][path]["get"]["parameters"]
        return {p["name"] for p in params if p["in"] == "query"}

    assert query("/v1/job/search") == {"tags", "match", "state"}
    assert query("/v1/result/{job_id}/log/{log_type}") == {
        "start_fragment",
        "start_timestamp",
        "phase",
        "format",
    }
    upload = doc["paths"]["/v1/result/{job_id}/artifact"]["post"]["requestBody"]
    assert list(upload["content"]) == ["multipart/form-data"]
