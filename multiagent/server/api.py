"""REST API v1: the agent-facing subset of upstream Testflinger plus job submission."""

from __future__ import annotations

import hmac
import io
from typing import Any

from apiflask import APIBlueprint
from flask import Response, current_app, jsonify, request, send_file
from marshmallow import ValidationError

from multiagent.server import SERVER_VERSION
from multiagent.server.accounts import Accounts
from multiagent.server.auth import AMC, AMCG, AMG, ONLY_AGENT, caller, gate
from multiagent.server.db import JOB_STATES, Store, valid_job_id
from multiagent.server.jobschema import Job, has_attachments
from multiagent.server.limits import BadInput, Limits, parse_json
from multiagent.server.permissions import submit_denied
from multiagent.server.policy import policy
from multiagent.server.replies import error, invalid, ok, text
from multiagent.server.schemas import (
    ActionIn,
    AdvertisedImages,
    AdvertisedQueues,
    AgentIn,
    JobSearchQuery,
    LogPost,
    LogQuery,
    ProvisionLogIn,
    QueuesQuery,
    ResultPost,
    StatusUpdate,
    Upload,
)
from multiagent.server.tokens import new_upload_key, token_digest
from multiagent.vocabulary import JobState, Phase

bp = APIBlueprint("api", __name__, enable_openapi=True)

LOG_TYPES = ("output", "serial")
# The per-job upload credential of a job with attachments: a cookie scoped to the job's
# attachments path, so a client that keeps cookies (upstream's CLI: a requests.Session)
# sends it back without knowing of it, and the submit's JSON stays upstream's.
UPLOAD_COOKIE = "tf_upload"
# Agent data is small: each of its strings is bounded like a query value, not a body.
TEXT_BOUNDED = ("api.agent_post",)


def store() -> Store:
    return current_app.extensions["tf_store"]


def accounts() -> Accounts:
    return current_app.extensions["tf_accounts"]


def limits() -> Limits:
    return policy().limits


def checked_job_id(job_id: str) -> Response | None:
    return None if valid_job_id(job_id) else text("Invalid job id\n", 400)


@bp.app_errorhandler(BadInput)
def bad_input(exc: BadInput) -> Response:
    return error(exc.status, exc.message)


@bp.app_errorhandler(413)
def too_large(exc: Exception) -> Response:
    return error(413, f"Payload too large (limit {limits().body_limit(request.endpoint)} bytes)")


@bp.before_app_request
def _bounded() -> Response | None:
    """Body size per endpoint (413; also for a body without Content-Length), the length of
    names in the URL and of query values (400), before any view reads anything."""
    bounds = limits()
    limit = bounds.body_limit(request.endpoint)
    if (request.content_length or 0) > limit:
        return error(413, f"Payload too large (limit {limit} bytes)")
    request.max_content_length = limit
    for value in (request.view_args or {}).values():
        if isinstance(value, str) and len(value) > bounds.name_chars:
            return error(400, f"A name in the URL is longer than {bounds.name_chars} characters")
    if any(len(v) > bounds.text_chars for v in request.args.values()):
        return error(400, f"A query value is longer than {bounds.text_chars} characters")
    _bounded_json(bounds, limit)
    return None


def _bounded_json(bounds: Limits, limit: int) -> None:
    """A JSON body within depth, integer range and string length, or BadInput, before
    the schema's parser (which has no such bounds) reads it. Text that does not parse is
    left to that parser: upstream's 400 "Bad Request"."""
    if not request.is_json:
        return
    raw = request.get_data(cache=True)
    if not raw.strip():
        return
    max_chars = bounds.text_chars if request.endpoint in TEXT_BOUNDED else limit
    try:
        parse_json(raw, bounds, max_chars=max_chars)
    except ValueError:
        pass


def held(job_id: str) -> Response | None:
    """None when the caller may write to the job: it exists (else 404), it was handed out,
    and to this caller: the client (or shared token) that popped it and, when the caller
    names itself with its `agent_name` cookie, the agent it was handed to (else 403).
    On an open server only the cookie is checked: every caller may do everything."""
    job = store().get_job(job_id)
    if job is None:
        return error(404, "Job not found")
    principal = caller()
    name = request.cookies.get("agent_name")
    if name is not None and name != job["agent"]:
        return error(403, f"Job {job_id} is not held by agent {name!r}")
    if not principal.everything and (job["agent"] is None or principal.holder != job["holder"]):
        return error(403, f"Job {job_id} is not held by {principal.name}")
    if job["acked"]:
        return None
    # The first word from the agent about its job acknowledges the hand-out; a job the
    # server took back (never acknowledged in time) is no longer this caller's.
    if not store().acknowledge(job_id, name):
        return error(409, f"Job {job_id} is not handed out to {name or 'this agent'}")
    return None


# -- health and auth ------------------------------------------------------------------
@bp.get("/v1")
def health() -> Response:
    return Response(f"Testflinger Server v{SERVER_VERSION}", mimetype="text/plain")


# -- agents ---------------------------------------------------------------------------
QUEUE_AGENT_FIELDS = ("name", "state", "queues", "location", "provision_type", "job_id", "comment")


def public_agent(agent: dict[str, Any], owners: dict[str, list[str]]) -> dict[str, Any]:
    """The agent document as upstream serves it, with `restricted_to` computed: those of
    its queues that are restricted and have owners."""
    out = {k: v for k, v in agent.items() if k != "updated_at_ts"}
    out["restricted_to"] = {
        q: owners[q] for q in agent.get("queues") or [] if isinstance(q, str) and owners.get(q)
    }
    return out


@bp.post("/v1/agents/data/<agent>")
@gate(AMG)
@bp.input(AgentIn, location="json")
def agent_post(agent: str, json_data: dict[str, Any]) -> Response:
    job_id = json_data.get("job_id")
    if job_id and valid_job_id(job_id) and (job := store().get_job(job_id)) is not None:
        taken_back = job["job_state"] not in JobState.FINAL and job["agent"] != agent
        # The agent's first word after a hand-out names its job: that acknowledges it.
        if taken_back or (not job["acked"] and not store().acknowledge(job_id, agent)):
            return error(409, f"Job {job_id} is not handed out to agent {agent!r}")
    if job_id == "":
        store().take_back_from(agent)
    store().post_agent(agent, json_data)
    resp = jsonify({"status": "OK"})
    resp.set_cookie("agent_name", agent, httponly=True, samesite="Strict")
    return resp


@bp.get("/v1/agents/data/<agent>")
@gate(AMCG)
def agent_get(agent: str) -> Response:
    found = store().get_agent(agent)
    if found is None:
        resp = jsonify({})
        resp.status_code = 404
        return resp
    return jsonify(public_agent(found, accounts().owners()))


@bp.get("/v1/agents/data")
@gate(AMC)
def agents_get_all() -> Response:
    owners = accounts().owners()
    return jsonify([public_agent(a, owners) for a in store().list_agents()])


@bp.post("/v1/agents/queues")
@gate(AMG)
@bp.input(AdvertisedQueues, location="json")
def agent_queues_post(json_data: dict[str, str]) -> Response:
    store().advertise_queues(json_data)
    return ok()


@bp.get("/v1/agents/queues")
@gate(AMC)
def agent_queues_get() -> Response:
    return jsonify(store().advertised_queues())


@bp.post("/v1/agents/images")
@gate(AMG)
@bp.input(AdvertisedImages, location="json")
def agent_images_post(json_data: dict[str, dict[str, str]]) -> Response:
    store().advertise_images(json_data)
    return ok()


@bp.post("/v1/agents/provision_logs/<agent>")
@gate(ONLY_AGENT)
@bp.input(ProvisionLogIn, location="json")
def provision_logs_post(agent: str, json_data: dict[str, Any]) -> Response:
    known = store().add_provision_log(
        agent, json_data["job_id"], json_data["exit_code"], json_data.get("detail", "")
    )
    return ok() if known else error(404, "Agent not found")


@bp.get("/v1/queues")
@gate(AMC)
def queues_get() -> Response:
    return jsonify(store().all_queues())


@bp.get("/v1/queues/<queue>/agents")
@gate(AMC)
def queue_agents_get(queue: str) -> Response:
    agents = store().agents_in_queue(queue)
    if not agents:
        return error(404, f"Queue '{queue}' does not exist.")
    return jsonify([{k: a[k] for k in QUEUE_AGENT_FIELDS if k in a} for a in agents])


@bp.get("/v1/queues/<queue>/jobs")
@gate(AMC)
def queue_jobs_get(queue: str) -> Response:
    jobs = [
        {"job_id": j["job_id"], "created_at": j["created_at"], "job_state": j["job_state"]}
        | {"job_queue": j["queue"]}
        for j in store().list_jobs(queue=queue, limit=None)
    ]
    return jsonify(jobs) if jobs else Response(status=204)


@bp.get("/v1/agents/images/<queue>")
@gate(AMC)
def queue_images_get(queue: str) -> Response:
    return jsonify(store().queue_images(queue))


@bp.get("/v1/queues/wait_times")
@gate(AMC)
@bp.input(QueuesQuery, location="query")
def wait_times_get(query_data: dict[str, list[str]]) -> Response:
    queues = [q for q in query_data.get("queue", []) if q] or None
    return jsonify(store().wait_time_percentiles(queues))


# -- jobs -----------------------------------------------------------------------------
@bp.post("/v1/job")
@gate(AMC)
@bp.input(Job, location="json", arg_name="job")
def job_post(job: dict[str, Any]) -> Response:
    if (refused := job_refused(job)) is not None:
        return refused
    principal = caller()
    if (job.get("test_data") or {}).get("secrets"):
        job["client_id"] = principal.client_id
    attachments = has_attachments(job)
    key = new_upload_key() if attachments else None
    job_id = store().add_job(
        job,
        attachments=attachments,
        submitter=principal.holder,
        upload_key=token_digest(key) if key else None,
    )
    resp = jsonify({"job_id": job_id})
    if key is None:
        return resp
    resp.set_cookie(
        UPLOAD_COOKIE,
        key,
        path=f"/v1/job/{job_id}/attachments",
        httponly=True,
        samesite="Strict",
    )
    return resp


def job_refused(body: dict[str, Any]) -> Response | None:
    """Upstream's checks after the schema, in order: excluded agents, secrets, job_id,
    then the caller's limits (priority, restricted queue, reservation time)."""
    queue = body["job_queue"]
    excluded = set(body.get("exclude_agents") or [])
    if excluded and all(a["name"] in excluded for a in store().agents_in_queue(queue)):
        return invalid(
            {
                "exclude_agents": [
                    "There are no agents on the specified queue that are allowed to run this job"
                ]
            }
        )
    principal = caller()
    wanted = (body.get("test_data") or {}).get("secrets") or {}
    if wanted:
        if principal.client_id is None:
            return invalid({"test_data": ["Missing client ID (user not authenticated)"]})
        missing = accounts().missing_secrets(principal.client_id, sorted(set(wanted.values())))
        if missing:
            return invalid({"test_data": [f"Inaccessible secret paths: {', '.join(missing)}"]})
    if "job_id" in body:
        if not valid_job_id(body["job_id"]):
            return error(400, "Invalid job_id specified")
        if store().get_job(body["job_id"]) is not None:
            return error(422, f"Job {body['job_id']} already exists")
    denied = submit_denied(principal, body, accounts().restricted())
    return error(denied[0], denied[1]) if denied else None


@bp.get("/v1/job")
@gate(ONLY_AGENT)
@bp.input(QueuesQuery, location="query")
def job_pop(query_data: dict[str, list[str]]) -> Response:
    queues = [q for q in query_data.get("queue", []) if q]
    if not queues:
        return error(400, "No queue(s) specified in request")
    agent = request.cookies.get("agent_name")
    if not agent:
        return error(401, "Agent not identified")
    job = store().pop_job(queues, agent, caller().holder)
    if job is None:
        return Response(status=204)
    test_data = job.get("test_data")
    if isinstance(test_data, dict) and isinstance(test_data.get("secrets"), dict):
        # Only the job handed to the agent carries values; everywhere else shows paths.
        values = accounts().resolve_secrets(job.get("client_id"), test_data["secrets"])
        job["test_data"] = dict(test_data, secrets=values)
    return jsonify(job)


@bp.get("/v1/job/search")
@gate(AMC)
@bp.input(JobSearchQuery, location="query")
def job_search(query_data: dict[str, Any]) -> Response:
    found = store().search_jobs(
        tags=query_data.get("tags", []),
        match_all=query_data["match"] == "all",
        states=query_data.get("state", []),
    )
    return jsonify(found)


@bp.get("/v1/job/<job_id>")
@gate(AMC)
def job_get(job_id: str) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    job = store().get_job(job_id)
    if job is None:
        return Response(status=204)
    hidden = ("attachments_status", "client_id")
    return jsonify({k: v for k, v in job["job_data"].items() if k not in hidden})


@bp.get("/v1/job/<job_id>/position")
@gate(AMC)
def job_position(job_id: str) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    position = store().job_position(job_id)
    if position is None:
        return Response("Job not found or already started\n", status=410, mimetype="text/plain")
    return text(str(position))  # upstream: plain digits


@bp.post("/v1/job/<job_id>/action")
@gate(AMC)
@bp.input(ActionIn, location="json")
def job_action(job_id: str, json_data: dict[str, str]) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    # Upstream: an unknown job and a finished one get the same 400.
    if store().cancel_job(job_id) != "ok":
        return text("The job is already completed or cancelled", 400)
    return ok()


@bp.post("/v1/job/<job_id>/attachments")
@gate(AMC)
@bp.input(Upload, location="files", validation=False, arg_name="_upload")
def attachments_post(job_id: str, _upload: Any) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    job = store().get_job(job_id)
    if job is None:
        return text(f"Job {job_id} is not valid\n", 422)
    if not may_upload(job):
        return error(403, f"Only the submitter of job {job_id} may upload its attachments")
    already = f"Job {job_id} has its attachments already; they are not replaced"
    if job["job_data"].get("attachments_status") == "complete":
        return error(409, already)
    if job["job_state"] != JobState.WAITING:
        return text(f"Job {job_id} is not valid\n", 422)
    upload = request.files.get("file")
    if upload is None:
        return error(400, "Missing multipart field 'file'")
    outcome = store().set_attachments(job_id, upload.read())
    if outcome == "missing":
        return text(f"Job {job_id} is not valid\n", 422)
    if outcome == "not-waiting":
        return text(f"Job {job_id} not awaiting attachments\n", 422)
    if outcome == "complete":
        return error(409, already)
    return ok()


def may_upload(job: dict[str, Any]) -> bool:
    """The job's submitter: the holder of its upload credential, or the same client (or
    shared token) that submitted it. An anonymous submitter has only the credential. On an
    open server no caller can be told from another: any may upload, once."""
    key = request.cookies.get(UPLOAD_COOKIE)
    stored = job["upload_key"]
    if key and stored and hmac.compare_digest(token_digest(key), stored):
        return True
    principal = caller()
    if job["submitter"] is not None and principal.holder == job["submitter"]:
        return True
    return principal.everything and principal.anonymous


@bp.get("/v1/job/<job_id>/attachments")
@gate(ONLY_AGENT)
def attachments_get(job_id: str) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    data = store().get_blob(job_id, "attachments")
    if data is None:
        return Response(status=204)
    if (refused := held(job_id)) is not None:
        return refused
    return send_file(
        io.BytesIO(data),
        mimetype="application/gzip",
        as_attachment=True,
        download_name=f"{job_id}.attachments",
    )


@bp.post("/v1/job/<job_id>/events")
@gate(ONLY_AGENT)
@bp.input(StatusUpdate, location="json")
def events_post(job_id: str, json_data: dict[str, Any]) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    if (refused := held(job_id)) is not None:
        return refused
    # Stored for the job page; no webhook forwarding, so no 500 for a missing WEBHOOK_URL.
    store().add_events(job_id, json_data)
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
@gate(ONLY_AGENT)
@bp.input(ResultPost, location="json", arg_name="body")
def result_post(job_id: str, body: dict[str, Any]) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    state = body.get("job_state")
    if state is not None and state not in JOB_STATES:
        return error(400, f"Unknown job_state {state!r}; one of {', '.join(JOB_STATES)}")
    if (refused := held(job_id)) is not None:
        return refused
    # Unlike upstream (a silent no-op), an unknown job is 404 and a state that would move
    # the job backwards (or out of complete) is 400; nothing is stored then.
    outcome = store().update_result(job_id, body)
    if outcome == "missing":
        return error(404, "Job not found")
    if outcome == "backwards":
        return error(400, f"Job {job_id} cannot move back to {state!r}")
    return ok()


@bp.get("/v1/result/<job_id>")
@gate(AMCG)
def result_get(job_id: str) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    s = store()
    job = s.get_job(job_id)
    if job is None:
        return Response(status=204)
    return jsonify(flat_result(s, job))


@bp.post("/v1/result/<job_id>/log/<log_type>")
@gate(ONLY_AGENT)
@bp.input(LogPost, location="json")
def log_post(job_id: str, log_type: str, json_data: dict[str, Any]) -> Response:
    if log_type not in LOG_TYPES:
        return error(404, f"Unknown log type {log_type!r}; use output or serial")
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    if (refused := held(job_id)) is not None:
        return refused
    fragment = dict(json_data, timestamp=json_data["timestamp"].isoformat())
    store().add_log(job_id, log_type, fragment)
    return ok()


@bp.get("/v1/result/<job_id>/log/<log_type>")
@gate(AMC)
@bp.input(LogQuery, location="query", validation=False)
def log_get(job_id: str, log_type: str, query_data: Any) -> Response:
    if log_type not in LOG_TYPES:
        return error(404, f"Unknown log type {log_type!r}; use output or serial")
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    try:
        query = LogQuery().load(query_data)
    except ValidationError as exc:
        return error(400, exc.normalized_messages())
    since = query["start_timestamp"]
    logs = store().get_logs(
        job_id,
        log_type,
        phase=query["phase"],
        start_fragment=query["start_fragment"],
        start_timestamp=since.isoformat() if since else None,
    )
    if query["phase"] is None:
        # Upstream lists all seven phases, those without output as -1 and "".
        empty = {"last_fragment_number": -1, "log_data": ""}
        logs = {p: logs.get(p, empty) for p in Phase.ALL}
    if query.get("format") == "text":
        # Convenience for humans and tests: the whole log as one text, phases in order.
        text = "".join(entry["log_data"] for entry in logs.values())
        return Response(text, mimetype="text/plain")
    return jsonify({log_type: logs})


@bp.post("/v1/result/<job_id>/artifact")
@gate(ONLY_AGENT)
@bp.input(Upload, location="files", validation=False, arg_name="_upload")
def artifact_post(job_id: str, _upload: Any) -> Response:
    if (bad := checked_job_id(job_id)) is not None:
        return bad
    if (refused := held(job_id)) is not None:
        return refused
    upload = request.files.get("file")
    if upload is None:
        return error(400, "Missing multipart field 'file'")
    store().put_artifact(job_id, upload.read())
    return ok()


@bp.get("/v1/result/<job_id>/artifact")
@gate(AMC)
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
