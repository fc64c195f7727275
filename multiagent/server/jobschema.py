"""The job of `POST /v1/job`, as upstream's server loads it.

Unknown keys are refused at every level except inside `firmware_update_data` and
`allocate_data`; `reserve_data.timeout` may be a duration and is loaded as seconds;
`exclude_agents` is always there once loaded.
"""

from __future__ import annotations

import re
from typing import Any

from apiflask import Schema, fields
from apiflask.validators import Length, Regexp
from marshmallow import ValidationError

from multiagent.server.provision import ProvisionData, attachments

SSH_KEY = r"^(lp|gh):\S+$"
SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
SECRET_PATH = r"^[A-Za-z0-9_/-]+$"
_DURATION_PART = re.compile(r"(\d+)\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|h|days?|d)?")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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


class Duration(fields.Field):
    """Seconds, given as a number or as a duration text; loaded as whole seconds."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        seconds = reservation_seconds(value)
        if seconds is None:
            raise ValidationError("Not a valid duration.")
        return seconds


class TestData(Schema):
    test_cmds = fields.String()
    test_username = fields.String()
    test_password = fields.String()
    attachments = attachments()
    secrets = fields.Dict(
        keys=fields.String(validate=Regexp(SECRET_NAME)),
        values=fields.String(validate=Regexp(SECRET_PATH)),
    )


class ReserveData(Schema):
    ssh_keys = fields.List(fields.String(validate=Regexp(SSH_KEY)))
    timeout = Duration()


class Job(Schema):
    job_queue = fields.String(required=True, validate=Length(min=1))
    job_id = fields.String()
    parent_job_id = fields.String()
    name = fields.String()
    job_status_webhook = fields.String()
    tags = fields.List(fields.String())
    exclude_agents = fields.List(fields.String(), load_default=list)
    global_timeout = fields.Integer(strict=True)
    output_timeout = fields.Integer(strict=True)
    allocation_timeout = fields.Integer(strict=True)
    job_priority = fields.Integer(strict=True)
    debug = fields.Boolean()
    provision_data = fields.Nested(ProvisionData, allow_none=True)
    firmware_update_data = fields.Dict(allow_none=True)
    test_data = fields.Nested(TestData, allow_none=True)
    allocate_data = fields.Dict(allow_none=True)
    reserve_data = fields.Nested(ReserveData, allow_none=True)


def has_attachments(job: dict[str, Any]) -> bool:
    """Upstream: any `<phase>_data.attachments` key, even an empty list, means an upload."""
    return any(
        isinstance(value, dict) and "attachments" in value
        for key, value in job.items()
        if key.endswith("_data")
    )
