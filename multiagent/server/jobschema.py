"""The job schema of `POST /v1/job`, as upstream's server checks it.

Unknown keys are errors at every level except inside `firmware_update_data` and
`allocate_data`; `provision_data` must load, with no extra key, under one of upstream's
device schemas; `reserve_data.timeout` may be a duration and is stored in seconds. Errors
nest like upstream's (`{"test_data": {"foo": ["Unknown field."]}}`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from multiagent.server.schemas import is_bool, is_dict, is_int, is_nonempty_str, is_str, list_of_str

Errors = dict[str, Any]

SSH_KEY = re.compile(r"^(lp|gh):\S+$")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_PATH = re.compile(r"^[A-Za-z0-9_/-]+$")
_DURATION_PART = re.compile(r"(\d+)\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|h|days?|d)?")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
INVALID_PROVISION = "Invalid provision data schema."


def is_url(value: Any) -> str | None:
    """A scheme and a host that is dotted, an IP address or localhost (upstream's rule)."""
    if not isinstance(value, str):
        return "Not a valid URL."
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
    except ValueError:
        return "Not a valid URL."
    if not parts.scheme or not host:
        return "Not a valid URL."
    if host == "localhost" or "." in host.strip("."):
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "Not a valid URL."
    return None


def is_list(value: Any) -> str | None:
    return None if isinstance(value, list) else "Not a valid list."


def is_nonempty_list(value: Any) -> str | None:
    return None if isinstance(value, list) and value else "Shorter than minimum length 1."


def attachment_list(value: Any) -> str | None:
    if not isinstance(value, list):
        return "Not a valid list."
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("agent"), str):
            return "Each attachment needs an `agent` path."
        if set(item) - {"agent", "device"} or not isinstance(item.get("device", ""), str):
            return "An attachment has only `agent` and `device` (send `local` files as a tar)."
    return None


def fields_errors(body: Any, spec: dict[str, tuple[Any, bool]]) -> Errors:
    if not isinstance(body, dict):
        return {"_schema": ["Invalid input type."]}
    errors: Errors = {}
    for name, (check, required) in spec.items():
        if name not in body:
            if required:
                errors[name] = ["Missing data for required field."]
        elif (msg := check(body[name])) is not None:
            errors[name] = msg if isinstance(msg, dict) else [msg]
    for name in body:
        if name not in spec:
            errors[name] = ["Unknown field."]
    return errors


# -- provision_data: upstream's device schemas, tried in order ---------------------------
def _one_source(data: dict[str, Any]) -> bool:
    sources = [k for k in ("url", "urls") if k in data] + (
        ["attachments"] if len(data.get("attachments") or []) == 1 else []
    )
    return len(sources) == 1


_IOT_SOURCE = {"url": (is_url, False), "urls": (is_list, False), "attachments": (is_list, False)}
PROVISION_SCHEMAS: list[tuple[dict[str, tuple[Any, bool]], Any]] = [
    ({"url": (is_url, True)}, None),  # cm3
    (
        {
            "distro": (is_str, False),
            "kernel": (is_str, False),
            "user_data": (is_str, False),
            "disks": (is_list, False),
            "ephemeral": (is_bool, False),
        },
        None,
    ),  # maas
    ({"jobs": (is_nonempty_list, True)}, None),  # multi
    (
        {
            "url": (is_url, False),
            "use_attachment": (is_str, False),
            "attachments": (attachment_list, False),
            "create_user": (is_bool, False),
            "boot_check_url": (is_str, False),
            "media": (is_str, False),
        },
        lambda d: "url" in d or "use_attachment" in d,
    ),  # muxpi
    ({"skip": (is_bool, False)}, None),  # noprovision
    (
        {
            "url": (is_url, False),
            "attachments": (attachment_list, False),
            "token_file": (is_str, False),
            "user_data": (is_str, False),
            "redeploy_cfg": (is_str, False),
            "authorized_keys": (is_str, False),
            "control_host_iso_url": (is_url, False),
            "control_host_iso_type": (is_str, False),
            "update_user_data": (is_bool, False),
        },
        None,
    ),  # oem_autoinstall
    ({"url": (is_url, True)}, None),  # oem_script
    ({"provision_plan": (is_dict, True), **_IOT_SOURCE}, _one_source),  # iot custom
    ({"preset": (is_str, True), **_IOT_SOURCE}, _one_source),  # iot preset
    ({"url": (is_url, True), "robot_tasks": (is_list, True)}, None),  # kvm autoinstall
    (
        {
            "url": (is_url, True),
            "robot_tasks": (is_list, True),
            "live_image": (is_bool, True),
            "wait_until_ssh": (is_bool, True),
        },
        None,
    ),  # generic
    ({"alloem_url": (is_url, True), "robot_tasks": (is_list, True)}, None),  # oem 2204
    ({"preset": (is_str, True)}, None),  # control host preset
]


def check_provision_data(value: Any) -> str | Errors | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return "Not a valid mapping type."
    for spec, extra in PROVISION_SCHEMAS:
        if not fields_errors(value, spec) and (extra is None or extra(value)):
            return None
    return {"_schema": [INVALID_PROVISION]}


def any_mapping(value: Any) -> str | None:
    return None if value is None else is_dict(value)


def lenient_provision_data(value: Any) -> str | None:
    """`--any-provision-data`: home-made connectors; only the attachment list is checked."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return "Not a valid mapping type."
    if "attachments" in value:
        return attachment_list(value["attachments"])
    return None


# -- test_data and reserve_data --------------------------------------------------------
def secrets_map(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "Not a valid mapping type."
    for name, path in value.items():
        if not SECRET_NAME.match(name):
            return f"Invalid secret name {name!r}."
        if not isinstance(path, str) or not SECRET_PATH.match(path):
            return f"Invalid secret path {path!r}."
    return None


TEST_DATA = {
    "test_cmds": (is_str, False),
    "test_username": (is_str, False),
    "test_password": (is_str, False),
    "attachments": (attachment_list, False),
    "secrets": (secrets_map, False),
}


def check_test_data(value: Any) -> Errors | None:
    if value is None:
        return None
    return fields_errors(value, TEST_DATA) or None


def reservation_seconds(value: Any) -> int | None:
    """An int >= 0, or a duration such as 90, 30s, 5min, 2h, 1d, 1h30m; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text.isdigit():
        return int(text)
    total, pos = 0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos or not match.group(2):
            return None
        total += int(match.group(1)) * _UNIT[match.group(2)[0]]
        pos = match.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
    return total if text and pos == len(text) else None


def ssh_keys(value: Any) -> str | None:
    if (msg := list_of_str(value)) is not None:
        return msg
    bad = [key for key in value if not SSH_KEY.match(key)]
    return f"Invalid SSH key id {bad[0]!r}: use lp:<user> or gh:<user>." if bad else None


def timeout_value(value: Any) -> str | None:
    return None if reservation_seconds(value) is not None else "Not a valid duration."


RESERVE_DATA = {"ssh_keys": (ssh_keys, False), "timeout": (timeout_value, False)}


def check_reserve_data(value: Any) -> Errors | None:
    if value is None:
        return None
    return fields_errors(value, RESERVE_DATA) or None


def job_spec(strict_provision: bool) -> dict[str, tuple[Any, bool]]:
    return {
        "job_queue": (is_nonempty_str, True),
        "job_id": (is_str, False),
        "parent_job_id": (is_str, False),
        "name": (is_str, False),
        "job_status_webhook": (is_str, False),
        "tags": (list_of_str, False),
        "exclude_agents": (list_of_str, False),
        "global_timeout": (is_int, False),
        "output_timeout": (is_int, False),
        "allocation_timeout": (is_int, False),
        "job_priority": (is_int, False),
        "debug": (is_bool, False),
        "provision_data": (
            check_provision_data if strict_provision else lenient_provision_data,
            False,
        ),
        "firmware_update_data": (any_mapping, False),
        "test_data": (check_test_data, False),
        "allocate_data": (any_mapping, False),
        "reserve_data": (check_reserve_data, False),
    }


def validate_job(body: Any, *, strict_provision: bool = True) -> Errors:
    return fields_errors(body, job_spec(strict_provision))


def normalised(job: dict[str, Any]) -> dict[str, Any]:
    """The job as stored: `exclude_agents` always there, the reservation time in seconds."""
    job = dict(job)
    job.setdefault("exclude_agents", [])
    reserve = job.get("reserve_data")
    if isinstance(reserve, dict) and "timeout" in reserve:
        job["reserve_data"] = dict(reserve, timeout=reservation_seconds(reserve["timeout"]))
    return job


def has_attachments(job: dict[str, Any]) -> bool:
    """Upstream: any `<phase>_data.attachments` key, even an empty list, means an upload."""
    return any(
        isinstance(value, dict) and "attachments" in value
        for key, value in job.items()
        if key.endswith("_data")
    )
