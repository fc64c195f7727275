"""API v1 routes of upstream's auth model: OAuth2 tokens, client permissions, restricted
queues and the secrets store."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import Response, jsonify, request

from multiagent.server.accounts import (
    DEFAULT_SECRET_LIFETIME,
    PROTECTED_CLIENT,
    RANK,
    SECRET_PATH,
    role_of,
)
from multiagent.server.api import accounts, store
from multiagent.server.auth import AM, AMC, ONLY_ADMIN, caller, gate, same_secret
from multiagent.server.policy import policy
from multiagent.server.replies import error, invalid, text
from multiagent.server.schemas import (
    ClientPermissionsIn,
    RefreshTokenIn,
    RestrictedQueueIn,
    SecretIn,
)
from multiagent.server.tokens import ACCESS_LIFETIME

bp = APIBlueprint("api_auth", __name__, enable_openapi=True)


def _token_answer(access: str, refresh: str | None = None) -> Response:
    body: dict[str, Any] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ACCESS_LIFETIME,
    }
    if refresh is not None:
        body["refresh_token"] = refresh
    return jsonify(body)


# -- oauth2 ---------------------------------------------------------------------------
@bp.post("/v1/oauth2/token")
def oauth_token() -> Response:
    """HTTP Basic client_id:secret -> an access token and a new refresh token."""
    if not request.headers.get("Authorization"):
        return text("No authorization header specified", 401)
    auth = request.authorization
    if auth is None or not auth.username or not auth.password:
        return text("Client id and key must be specified in authorization header", 401)
    shared = policy().token
    if shared is not None and same_secret(auth.password, shared):
        return _token_answer(shared, shared)  # the shared token is its own access token
    client = accounts().authenticate(auth.username, auth.password)
    if client is None:
        return text("Invalid client id or client key", 401)
    return _token_answer(
        accounts().access_token(client), accounts().mint_refresh(client["client_id"])
    )


@bp.post("/v1/oauth2/refresh")
@bp.input(RefreshTokenIn, location="json")
def oauth_refresh(json_data: dict[str, str]) -> Response:
    offered = json_data["refresh_token"]
    shared = policy().token
    if shared is not None and same_secret(offered, shared):
        return _token_answer(shared)
    if shared is None and not accounts().has_clients():
        # An open server checks nothing; echoing the offered value keeps such agents happy.
        return _token_answer(offered)
    client, problem = accounts().use_refresh(offered)
    if client is None:
        return error(400, problem)
    return _token_answer(accounts().access_token(client))


@bp.post("/v1/oauth2/revoke")
@gate(ONLY_ADMIN)
@bp.input(RefreshTokenIn, location="json")
def oauth_revoke(json_data: dict[str, str]) -> Response:
    problem = accounts().revoke(json_data["refresh_token"])
    return error(400, problem) if problem else jsonify({"status": "OK"})


# -- client permissions ---------------------------------------------------------------
def _public_client(client: dict[str, Any]) -> dict[str, Any]:
    return {"role": role_of(client), **client}


@bp.get("/v1/client-permissions")
@gate(AM)
def clients_get() -> Response:
    return jsonify([_public_client(c) for c in accounts().all()])


@bp.get("/v1/client-permissions/<client_id>")
@gate(AM)
def client_get(client_id: str) -> Response:
    client = accounts().get(client_id)
    if client is None:
        return error(404, "Error: Specified client_id does not exist.")
    return jsonify(_public_client(client))


@bp.put("/v1/client-permissions/<client_id>")
@gate(AM)
@bp.input(ClientPermissionsIn, location="json", arg_name="body")
def client_put(client_id: str, body: dict[str, Any]) -> Response:
    if client_id == PROTECTED_CLIENT:
        return error(422, f"'{PROTECTED_CLIENT}' cannot be modified")
    existing = accounts().get(client_id)
    if existing is None and "client_secret" not in body:
        return error(400, "Error: Missing client_secret in request body for new client")
    principal = caller()
    rank = RANK[principal.role or "agent"] if not principal.everything else RANK["admin"]
    if existing is not None and rank < RANK[role_of(existing)]:
        return error(
            403, f"{principal.name} has insufficient permissions to modify client '{client_id}'"
        )
    if "role" in body and rank < RANK[body["role"]]:
        return error(
            403,
            f"{principal.name} has insufficient permissions to assign role '{body['role']}' "
            f"to client '{client_id}'",
        )
    doc = {k: v for k, v in body.items() if k != "client_secret"}
    created = accounts().save(client_id, doc, secret=body.get("client_secret"))
    verb = "Created" if created else "Updated"
    return text(f"{verb} permissions for client '{client_id}'")


@bp.delete("/v1/client-permissions/<client_id>")
@gate(ONLY_ADMIN)
def client_delete(client_id: str) -> Response:
    if client_id == PROTECTED_CLIENT:
        return error(422, f"'{PROTECTED_CLIENT}' cannot be deleted")
    if not accounts().delete(client_id):
        return error(404, "Error: Specified client_id does not exist.")
    return text("OK")


# -- restricted queues ----------------------------------------------------------------
@bp.get("/v1/restricted-queues")
@gate(AMC)
def restricted_get_all() -> Response:
    owners = accounts().owners()
    return jsonify([{"queue": q, "owners": o} for q, o in owners.items()])


@bp.get("/v1/restricted-queues/<queue>")
@gate(AMC)
def restricted_get(queue: str) -> Response:
    owners = accounts().owners()
    if queue not in owners:
        return error(404, "Error: Restricted queue not found.")
    return jsonify({"queue": queue, "owners": owners[queue]})


@bp.post("/v1/restricted-queues/<queue>")
@gate(AM)
@bp.input(RestrictedQueueIn, location="json")
def restricted_post(queue: str, json_data: dict[str, str]) -> Response:
    client_id = json_data["client_id"]
    if not client_id:
        return error(400, "Error: Missing client ID.")
    if accounts().get(client_id) is None:
        return error(404, "Error: Specified client_id does not exist.")
    if not store().agents_in_queue(queue):
        return error(404, "Error: No agent is associated with the specified queue.")
    accounts().restrict(queue, client_id)
    return text("OK")


@bp.delete("/v1/restricted-queues/<queue>")
@gate(AM)
@bp.input(RestrictedQueueIn, location="json")
def restricted_delete(queue: str, json_data: dict[str, str]) -> Response:
    if queue not in accounts().restricted():
        return error(404, "Error: Restricted queue not found.")
    client_id = json_data["client_id"]
    if not client_id:
        return error(400, "Error: Missing client ID.")
    accounts().unrestrict(queue, client_id)
    return text("OK")


# -- secrets --------------------------------------------------------------------------
def _secret_owner(client_id: str, path: str) -> Response | None:
    principal = caller()
    if principal.client_id is None:
        return error(401, "Authentication required to access secrets")
    if principal.client_id != client_id:
        return error(403, f"'{client_id}' doesn't match authenticated client id")
    if not SECRET_PATH.match(path):
        return invalid({"path": [f"Invalid secret path {path!r}."]})
    return None


@bp.put("/v1/secrets/<client_id>/<path:path>")
@gate(AMC)
@bp.input(SecretIn, location="json", arg_name="body")
def secret_put(client_id: str, path: str, body: dict[str, Any]) -> Response:
    if (refused := _secret_owner(client_id, path)) is not None:
        return refused
    expires = accounts().put_secret(
        client_id,
        path,
        body["value"],
        body.get("expire_after", DEFAULT_SECRET_LIFETIME),
        bool(body.get("ephemeral")),
    )
    return jsonify({"expires_at": expires})


@bp.delete("/v1/secrets/<client_id>/<path:path>")
@gate(AMC)
def secret_delete(client_id: str, path: str) -> Response:
    if (refused := _secret_owner(client_id, path)) is not None:
        return refused
    accounts().delete_secret(client_id, path)
    return text("OK")
