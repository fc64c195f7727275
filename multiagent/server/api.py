"""REST API v1: the agent-facing subset of upstream Testflinger plus job submission."""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from multiagent.vocabulary import ALL_PHASES

from . import SERVER_VERSION, schemas
from .auth import bearer_ok
from .db import Store, valid_job_id

bp = Blueprint("api", __name__)

LOG_TYPES = ("output", "serial")
MAX_RESULT_BYTES = 16 * 1024 * 1024  # upstream answers 413 on result posts this big


def store() -> Store:
    return current_app.extensions["tf_store"]


def error(status: int, message: str, detail: dict[str, Any] | None = None) -> Response:
    resp = jsonify({"message": message, "detail": detail or {}})
    resp.status_code = status
    return resp


def invalid(errors: dict[str, list[str]]) -> Response:
    return error(422, "Validation error", {"json": errors})


def ok() -> Response:
    return Response("OK", mimetype="text/plain")


def json_body() -> Any:
    return request.get_json(force=True, silent=True)


def needs_token(view: Callable[..., Any]) -> Callable[..., Any]:
    """Agent and submit endpoints: Bearer token when the server has one (reads stay open)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = current_app.config.get("TF_TOKEN")
        if not bearer_ok(request.headers.get("Authorization"), token):
            # 401 (not 403) so an upstream agent refreshes its token and replays once.
            return error(401, "Authentication is required for specified endpoint")
        return view(*args, **kwargs)

    return wrapper


def checked_job_id(job_id: str) -> Response | None:
    return None if valid_job_id(job_id) else error(400, "Invalid job id")


# -- health and auth ------------------------------------------------------------------
@bp.get("/v1")
def health() -> Response:
    return Response(f"Testflinger Server v{SERVER_VERSION}", mimetype="text/plain")


@bp.post("/v1/oauth2/refresh")
def oauth_refresh() -> Response:
    body = json_body()
    errors = schemas.validate_refresh(body)
    if errors:
        return invalid(errors)
    token = current_app.config.get("TF_TOKEN")
    offered = body["refresh_token"]
    # The shared server token is both the refresh and the access token. Without a server
    # token nothing is checked, so echoing the offered value keeps such agents happy.
    if token is not None and not bearer_ok(f"Bearer {offered}", token):
        return error(400, "Invalid refresh token.")
    return jsonify({"access_token": token or offered, "token_type": "Bearer", "expires_in": 600})


@bp.post("/v1/oauth2/token")
def oauth_token() -> Response:
    token = current_app.config.get("TF_TOKEN")
    auth = request.authorization
    secret = auth.password if auth else None
    if token is not None and not bearer_ok(f"Bearer {secret or ''}", token):
        return error(401, "Invalid client id or secret")
    value = token or "anonymous"
    return jsonify(
        {"access_token": value, "token_type": "Bearer", "expires_in": 600, "refresh_token": value}
    )


# -- agents ---------------------------------------------------------------------------
def public_agent(agent: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in agent.items() if k != "updated_at_ts"}


@bp.post("/v1/agents/data/<agent>")
@needs_token
def agent_post(agent: str) -> Response:
    body = json_body()
    errors = schemas.validate_agent_in(body)
    if errors:
        return invalid(errors)
    store().post_agent(agent, body)
    resp = jsonify({"status": "OK"})
    resp.set_cookie("agent_name", agent, httponly=True, samesite="Strict")
    return resp


@bp.get("/v1/agents/data/<agent>")
def agent_get(agent: str) -> Response:
    found = store().get_agent(agent)
    if found is None:
        resp = jsonify({})
        resp.status_code = 404
        return resp
    return jsonify(public_agent(found))


@bp.get("/v1/agents/data")
def agents_get_all() -> Response:
    return jsonify([public_agent(a) for a in store().list_agents()])


@bp.post("/v1/agents/queues")
@needs_token
def agent_queues_post() -> Response:
    body = json_body()
    errors = schemas.validate_advertised_queues(body)
    if errors:
        return invalid(errors)
    store().advertise_queues(body)
    return ok()


@bp.get("/v1/agents/queues")
def agent_queues_get() -> Response:
    return jsonify(store().advertised_queues())


@bp.post("/v1/agents/images")
@needs_token
def agent_images_post() -> Response:
    body = json_body()
    errors = schemas.validate_advertised_images(body)
    if errors:
        return invalid(errors)
    store().advertise_images(body)
    return ok()


@bp.post("/v1/agents/provision_logs/<agent>")
@needs_token
def provision_logs_post(agent: str) -> Response:
    body = json_body()
    errors = schemas.validate_provision_log(body)
    if errors:
        return invalid(errors)
    known = store().add_provision_log(
        agent, body["job_id"], body["exit_code"], body.get("detail", "")
    )
    return ok() if known else error(404, "Agent not found")


@bp.get("/v1/queues")
def queues_get() -> Response:
    return jsonify(store().all_queues())


@bp.get("/v1/queues/<queue>/agents")
def queue_agents_get(queue: str) -> Response:
    return jsonify([public_agent(a) for a in store().agents_in_queue(queue)])


# -- jobs -----------------------------------------------------------------------------
@bp.post("/v1/job")
@needs_token
def job_post() -> Response:
    body = json_body()
    errors = schemas.validate_job(body)
    if errors:
        return invalid(errors)
    job_id = store().add_job(body, attachments=schemas.job_has_attachments(body))
    return jsonify({"job_id": job_id})


@bp.get("/v1/job")
@needs_token
def job_pop() -> Response:
    queues = [q for q in request.args.getlist("queue") if q]
    if not queues:
        return error(400, "No queue(s) specified in request")
    agent = request.cookies.get("agent_name")
    if not agent:
        return error(401, "Agent not identified")
    job = store().pop_job(queues, agent)
    if job is None:
        return Response(status=204)
    return jsonify(job)


@bp.get("/v1/job/<job_id>")
def job_get(job_id: str) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    job = store().get_job(job_id)
    if job is None:
        return Response(status=204)
    return jsonify(job["job_data"])


@bp.get("/v1/job/<job_id>/position")
def job_position(job_id: str) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    position = store().job_position(job_id)
    if position is None:
        return Response("Job not found or already started\n", status=410, mimetype="text/plain")
    return jsonify(position)


@bp.post("/v1/job/<job_id>/action")
@needs_token
def job_action(job_id: str) -> Response:
    body = json_body()
    errors = schemas.validate_action(body)
    if errors:
        return invalid(errors)
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    if body["action"] != "cancel":
        return error(400, f"Invalid action: {body['action']}")
    outcome = store().cancel_job(job_id)
    if outcome == "missing":
        return error(404, "Job not found")
    if outcome == "final":
        return error(400, "The job is already completed or cancelled")
    return ok()


@bp.post("/v1/job/<job_id>/attachments")
@needs_token
def attachments_post(job_id: str) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    upload = request.files.get("file")
    if upload is None:
        return error(400, "Missing multipart field 'file'")
    outcome = store().set_attachments(job_id, upload.read())
    if outcome == "missing":
        return error(404, "Job not found")
    if outcome == "not-waiting":
        return error(422, "Job is not awaiting attachments")
    return ok()


@bp.get("/v1/job/<job_id>/attachments")
@needs_token
def attachments_get(job_id: str) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    data = store().get_blob(job_id, "attachments")
    if data is None:
        return Response(status=204)
    return send_file(
        io.BytesIO(data),
        mimetype="application/gzip",
        as_attachment=True,
        download_name=f"{job_id}.attachments",
    )


@bp.post("/v1/job/<job_id>/events")
@needs_token
def events_post(job_id: str) -> Response:
    body = json_body()
    errors = schemas.validate_status_update(body)
    if errors:
        return invalid(errors)
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    if store().get_job(job_id) is None:
        return error(404, "Job not found")
    # Stored for the job page; no webhook forwarding, so no 500 for a missing WEBHOOK_URL.
    store().add_events(job_id, body)
    return ok()


# -- results, logs, artifacts ---------------------------------------------------------
def flat_result(s: Store, job: dict[str, Any]) -> dict[str, Any]:
    """Upstream ResultGet: flat `{phase}_status|_output|_serial`, device_info, job_state."""
    result = job["result_data"]
    out: dict[str, Any] = {}
    for phase, code in (result.get("status") or {}).items():
        out[f"{phase}_status"] = code
    for log_type, suffix in (("output", "output"), ("serial", "serial")):
        for phase, entry in s.get_logs(job["job_id"], log_type).items():
            out[f"{phase}_{suffix}"] = entry["log_data"]
    if "device_info" in result:
        out["device_info"] = result["device_info"]
    out["job_state"] = job["job_state"]
    return out


@bp.post("/v1/result/<job_id>")
@needs_token
def result_post(job_id: str) -> Response:
    if (request.content_length or 0) >= MAX_RESULT_BYTES:
        return error(413, "Payload too large")
    body = json_body()
    errors = schemas.validate_result_post(body)
    if errors:
        return invalid(errors)
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    # Like upstream, an unknown job is a silent no-op that still answers OK.
    store().update_result(job_id, body)
    return ok()


@bp.get("/v1/result/<job_id>")
def result_get(job_id: str) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    s = store()
    job = s.get_job(job_id)
    if job is None:
        return Response(status=204)
    return jsonify(flat_result(s, job))


@bp.post("/v1/result/<job_id>/log/<log_type>")
@needs_token
def log_post(job_id: str, log_type: str) -> Response:
    if log_type not in LOG_TYPES:
        return error(404, f"Unknown log type {log_type!r}; use output or serial")
    body = json_body()
    errors = schemas.validate_log_post(body)
    if errors:
        return invalid(errors)
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    store().add_log(job_id, log_type, body)
    return ok()


@bp.get("/v1/result/<job_id>/log/<log_type>")
def log_get(job_id: str, log_type: str) -> Response:
    if log_type not in LOG_TYPES:
        return error(404, f"Unknown log type {log_type!r}; use output or serial")
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    phase = request.args.get("phase") or None
    if phase is not None and phase not in ALL_PHASES:
        return error(400, f"Invalid phase {phase!r}")
    try:
        start_fragment = int(request.args.get("start_fragment", 0))
    except ValueError:
        return error(400, "start_fragment must be an integer")
    logs = store().get_logs(
        job_id,
        log_type,
        phase=phase,
        start_fragment=start_fragment,
        start_timestamp=request.args.get("start_timestamp"),
    )
    if request.args.get("format") == "text":
        # Convenience for humans and tests: the whole log as one text, phases in order.
        text = "".join(entry["log_data"] for entry in logs.values())
        return Response(text, mimetype="text/plain")
    return jsonify({log_type: logs})


@bp.post("/v1/result/<job_id>/artifact")
@needs_token
def artifact_post(job_id: str) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    upload = request.files.get("file")
    if upload is None:
        return error(400, "Missing multipart field 'file'")
    store().put_artifact(job_id, upload.read())
    return ok()


@bp.get("/v1/result/<job_id>/artifact")
def artifact_get(job_id: str) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    data = store().get_blob(job_id, "artifact")
    if data is None:
        return Response(status=204)
    return send_file(
        io.BytesIO(data),
        mimetype="application/gzip",
        as_attachment=True,
        download_name=f"{job_id}.artifact.tar.gz",
    )
