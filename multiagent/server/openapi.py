"""`GET /v1/openapi.json`: an OpenAPI 3.0 description of every route, built from the URL map
with the body schemas below. It names endpoints and fields only, never data, so it needs
no token; the fuzz test (Schemathesis) reads it.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from werkzeug.routing import Rule

from multiagent.server import SERVER_VERSION
from multiagent.vocabulary import ALL_PHASES

bp = Blueprint("openapi", __name__)

STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
BOOL: dict[str, Any] = {"type": "boolean"}
STRS: dict[str, Any] = {"type": "array", "items": STR}
ANY_OBJECT: dict[str, Any] = {"type": "object"}
INT_MAP: dict[str, Any] = {"type": "object", "additionalProperties": INT}
FILE: dict[str, Any] = {
    "type": "object",
    "properties": {"file": {"type": "string", "format": "binary"}},
    "required": ["file"],
}


def obj(required: tuple[str, ...] = (), **props: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


BODIES: dict[str, dict[str, Any]] = {
    "api.agent_post": obj(
        state=STR,
        comment=STR,
        queues=STRS,
        location=STR,
        provision_type=STR,
        identifier=STR,
        job_id=STR,
        log=STRS,
    ),
    "api.agent_queues_post": {"type": "object", "additionalProperties": STR},
    "api.agent_images_post": {
        "type": "object",
        "additionalProperties": {"type": "object", "additionalProperties": STR},
    },
    "api.provision_logs_post": obj(("job_id", "exit_code"), job_id=STR, exit_code=INT, detail=STR),
    "api.job_post": obj(
        ("job_queue",),
        job_queue=STR,
        job_id=STR,
        name=STR,
        tags=STRS,
        job_priority=INT,
        global_timeout=INT,
        output_timeout=INT,
        provision_data=ANY_OBJECT,
        test_data=obj(test_cmds=STR, secrets={"type": "object", "additionalProperties": STR}),
        reserve_data=obj(timeout=INT, ssh_keys=STRS),
        allocate_data=ANY_OBJECT,
    ),
    "api.job_action": obj(("action",), action={"type": "string", "enum": ["cancel"]}),
    "api.events_post": obj(
        ("job_status_webhook",),
        job_status_webhook=STR,
        agent_id=STR,
        job_queue=STR,
        events={
            "type": "array",
            "items": obj(("event_name", "timestamp"), event_name=STR, timestamp=STR, detail=STR),
        },
    ),
    "api.result_post": obj(
        status={"type": "object", "additionalProperties": INT},
        device_info=ANY_OBJECT,
        job_state=STR,
    ),
    "api.log_post": obj(
        ("fragment_number", "timestamp", "phase", "log_data"),
        fragment_number=INT,
        timestamp={"type": "string", "format": "date-time"},
        phase={"type": "string", "enum": list(ALL_PHASES)},
        log_data=STR,
    ),
    "api_auth.oauth_refresh": obj(("refresh_token",), refresh_token=STR),
    "api_auth.oauth_revoke": obj(("refresh_token",), refresh_token=STR),
    "api_auth.client_put": obj(
        client_secret=STR,
        max_priority=INT_MAP,
        max_reservation_time=INT_MAP,
        role={"type": "string", "enum": ["admin", "manager", "contributor", "agent"]},
        email=STR,
    ),
    "api_auth.restricted_post": obj(("client_id",), client_id=STR),
    "api_auth.restricted_delete": obj(("client_id",), client_id=STR),
    "api_auth.secret_put": obj(("value",), value=STR, expire_after=INT, ephemeral=BOOL),
}
UPLOADS = ("api.attachments_post", "api.artifact_post")
QUERIES: dict[str, dict[str, dict[str, Any]]] = {
    "api.job_pop": {"queue": STRS},
    "api.job_search": {"tags": STRS, "match": STR, "state": STRS},
    "api.wait_times_get": {"queue": STRS},
    "api.log_get": {"start_fragment": INT, "start_timestamp": STR, "phase": STR, "format": STR},
    "pages.agents_page": {"state": STR, "queue": STR, "location": STR, "sort": STR, "dir": STR},
}
SKIPPED = ("static", "pages.static")
_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def _operation(rule: Rule) -> dict[str, Any]:
    endpoint = rule.endpoint
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": STR}
        for name in _PARAM.findall(rule.rule)
    ]
    for name, schema in QUERIES.get(endpoint, {}).items():
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
        if schema.get("type") == "array":
            param.update(style="form", explode=True)
        params.append(param)
    op: dict[str, Any] = {
        "operationId": endpoint,
        "parameters": params,
        "responses": {"default": {"description": "Any answer but a 5xx"}},
    }
    if endpoint in BODIES:
        content = {"application/json": {"schema": BODIES[endpoint]}}
        op["requestBody"] = {"required": True, "content": content}
    elif endpoint in UPLOADS:
        op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": FILE}}}
    return op


def document(app: Flask) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint in SKIPPED:
            continue
        path = _PARAM.sub(r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule)
    return {
        "openapi": "3.0.3",
        "info": {"title": "tf-fleet server (Testflinger API v1)", "version": SERVER_VERSION},
        "paths": paths,
    }


@bp.get("/v1/openapi.json")
def openapi_document():
    return jsonify(document(current_app))
