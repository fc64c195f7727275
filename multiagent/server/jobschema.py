"""The job of `POST /v1/job`, as upstream's server loads it.

Unknown keys are refused at every level except inside `firmware_update_data` and
`allocate_data`; `reserve_data.timeout` may be a duration and is loaded as seconds;
`exclude_agents` is always there once loaded.
"""

from __future__ import annotations

from typing import Any

from apiflask import Schema, fields
from apiflask.validators import Length, Regexp
from marshmallow import ValidationError

from multiagent.server.provision import ProvisionData, attachments
from multiagent.vocabulary import parse_duration

SSH_KEY = r"^(lp|gh):\S+$"
SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
SECRET_PATH = r"^[A-Za-z0-9_/-]+$"


def reservation_seconds(value: Any) -> int | None:
    """Whole seconds >= 0, given as an int or a duration such as 90, 30s, 5min, 2h, 1d,
    1h30m (`vocabulary.parse_duration`); None if invalid."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    try:
        seconds = parse_duration(value)
    except ValueError:
        return None
    return int(seconds) if seconds == int(seconds) else None


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
