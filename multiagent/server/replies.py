"""The answers views build by hand: upstream's JSON error shape, its plain-text bodies."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify


def error(
    status: int, message: str | dict[str, Any], detail: dict[str, Any] | None = None
) -> Response:
    """apiflask's error body, for refusals a view decides after the schema passed."""
    resp = jsonify({"message": message, "detail": detail or {}})
    resp.status_code = status
    return resp


def invalid(errors: dict[str, Any]) -> Response:
    """A 422 shaped as a schema failure, for checks upstream makes after loading."""
    return error(422, "Validation error", {"json": errors})


def text(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/plain")


def ok() -> Response:
    return text("OK")
