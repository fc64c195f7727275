"""Request body validation: small pure checkers mirroring upstream's strict schemas.

Every validator returns `{field: [message, ...]}`; an empty dict means the body is valid.
Unknown fields are errors, as upstream (marshmallow RAISE) rejects them with 422.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from multiagent.server.limits import INT64_MAX
from multiagent.vocabulary import (
    ALL_PHASES,
    JOB_ALLOCATED,
    JOB_CANCELLED,
    JOB_COMPLETED,
    PHASES,
)

Checker = Callable[[Any], "str | None"]
Fields = Mapping[str, tuple[Checker, bool]]


def is_str(value: Any) -> str | None:
    return None if isinstance(value, str) else "Not a valid string."


def is_int(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    return None if ok else "Not a valid integer."


def is_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "Not a valid boolean."


def is_dict(value: Any) -> str | None:
    return None if isinstance(value, dict) else "Not a valid mapping type."


def is_nonempty_str(value: Any) -> str | None:
    if not isinstance(value, str):
        return "Not a valid string."
    return None if value else "Shorter than minimum length 1."


def list_of_str(value: Any) -> str | None:
    if not isinstance(value, list):
        return "Not a valid list."
    if any(not isinstance(item, str) for item in value):
        return "Not a valid string."
    return None


def is_datetime(value: Any) -> str | None:
    if not isinstance(value, str):
        return "Not a valid datetime."
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return "Not a valid datetime."
    return None


def is_phase(value: Any) -> str | None:
    return None if value in ALL_PHASES else f"Must be one of: {', '.join(ALL_PHASES)}."


def is_status(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "Not a valid mapping type."
    for key, code in value.items():
        if key not in ALL_PHASES:
            return f"Invalid phase {key!r}."
        if is_int(code):
            return f"Status of {key!r} is not a valid integer."
    return None


def _validate(body: Any, fields: Fields) -> dict[str, list[str]]:
    if not isinstance(body, dict):
        return {"_schema": ["Invalid input type."]}
    errors: dict[str, list[str]] = {}
    for name, (check, required) in fields.items():
        if name not in body:
            if required:
                errors[name] = ["Missing data for required field."]
            continue
        msg = check(body[name])
        if msg:
            errors[name] = [msg]
    for name in body:
        if name not in fields:
            errors[name] = ["Unknown field."]
    return errors


AGENT_IN = {
    "state": (is_str, False),
    "comment": (is_str, False),
    "queues": (list_of_str, False),
    "location": (is_str, False),
    "provision_type": (is_str, False),
    "identifier": (is_str, False),
    "job_id": (is_str, False),
    "log": (list_of_str, False),
}
RESULT_POST = {
    "status": (is_status, False),
    "device_info": (is_dict, False),
    "job_state": (is_str, False),
}
LOG_POST = {
    "fragment_number": (is_int, True),
    "timestamp": (is_datetime, True),
    "phase": (is_phase, True),
    "log_data": (is_str, True),
}
PROVISION_LOG_IN = {
    "job_id": (is_str, True),
    "exit_code": (is_int, True),
    "detail": (is_str, False),
}
REFRESH_IN = {"refresh_token": (is_nonempty_str, True)}
ACTION_IN = {"action": (is_str, True)}


def _is_event_list(value: Any) -> str | None:
    if not isinstance(value, list):
        return "Not a valid list."
    spec = {"event_name": (is_str, True), "timestamp": (is_str, True), "detail": (is_str, False)}
    for event in value:
        if _validate(event, spec):
            return "Invalid event."
    return None


STATUS_UPDATE = {
    "agent_id": (is_str, False),
    "job_queue": (is_str, False),
    "job_status_webhook": (is_str, True),
    "events": (_is_event_list, False),
}


def validate_agent_in(body: Any) -> dict[str, list[str]]:
    return _validate(body, AGENT_IN)


def validate_result_post(body: Any) -> dict[str, list[str]]:
    return _validate(body, RESULT_POST)


def validate_log_post(body: Any) -> dict[str, list[str]]:
    return _validate(body, LOG_POST)


def validate_provision_log(body: Any) -> dict[str, list[str]]:
    return _validate(body, PROVISION_LOG_IN)


def validate_refresh(body: Any) -> dict[str, list[str]]:
    return _validate(body, REFRESH_IN)


def validate_action(body: Any) -> dict[str, list[str]]:
    return _validate(body, ACTION_IN)


def validate_status_update(body: Any) -> dict[str, list[str]]:
    return _validate(body, STATUS_UPDATE)


def validate_advertised_queues(body: Any) -> dict[str, list[str]]:
    if not isinstance(body, dict):
        return {"_schema": ["Invalid input type."]}
    errors: dict[str, list[str]] = {}
    for name, description in body.items():
        if not name:
            errors[name] = ["Queue name must not be empty."]
        elif not isinstance(description, str):
            errors[name] = ["Not a valid string."]
    return errors


def _bad_image_name(name: str) -> bool:
    return not name or name.startswith("$") or "." in name or "\0" in name


def validate_advertised_images(body: Any) -> dict[str, list[str]]:
    if not isinstance(body, dict):
        return {"_schema": ["Invalid input type."]}
    errors: dict[str, list[str]] = {}
    for queue, images in body.items():
        if not queue or not isinstance(images, dict):
            errors[queue] = ["Expected {image_name: provision_data}."]
            continue
        for image, data in images.items():
            if _bad_image_name(image) or not isinstance(data, str):
                errors.setdefault(queue, []).append(f"Invalid image {image!r}.")
    return errors


# States `GET /v1/job/search` accepts (upstream's list; `active` = not finished).
# (`waiting`, `running` and the agent's `complete` are refused, as upstream does.)
SEARCH_ACTIVE = "active"
SEARCH_STATES = (*PHASES, JOB_ALLOCATED, "cleanup", JOB_CANCELLED, JOB_COMPLETED, SEARCH_ACTIVE)
LOG_QUERY = ("start_fragment", "start_timestamp", "phase")
LOCAL_LOG_QUERY = ("format",)  # the local server's `format=text`: the whole log as text


def log_query(args: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The log reader's query (`start_fragment`, `start_timestamp`, `phase`) and upstream's
    400 messages for a bad or unknown parameter."""
    problems: dict[str, list[str]] = {}
    for name in args:
        if name not in LOG_QUERY + LOCAL_LOG_QUERY:
            problems[name] = ["Unknown field."]
    query: dict[str, Any] = {"start_fragment": 0, "start_timestamp": None, "phase": None}
    raw = args.get("start_fragment")
    if raw is not None:
        if not (raw.isascii() and raw.isdigit()):
            problems["start_fragment"] = ["Must be greater than or equal to 0."]
        elif len(raw) > 19 or int(raw) > INT64_MAX:
            problems["start_fragment"] = ["An integer is out of range (64-bit signed)."]
        else:
            query["start_fragment"] = int(raw)
    stamp = args.get("start_timestamp")
    if stamp is not None:
        if is_datetime(stamp):
            problems["start_timestamp"] = ["Not a valid datetime."]
        else:
            query["start_timestamp"] = stamp
    phase = args.get("phase")
    if phase is not None:
        if is_phase(phase):
            problems["phase"] = [is_phase(phase) or ""]
        else:
            query["phase"] = phase
    return query, problems
