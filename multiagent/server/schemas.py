"""Request schemas of API v1 (marshmallow, through apiflask), apart from the job's own.

apiflask loads each body with these before the view runs and answers a failure with
upstream's 422 `{"message": "Validation error", "detail": {"json": {...}}}`; unknown
fields are refused, as upstream's server refuses them. Integers are strict (JSON numbers
only): a numeric string would bypass the 64-bit bound every JSON integer is held to.
"""

from __future__ import annotations

from typing import Any

from apiflask import Schema, fields
from apiflask.validators import Length, OneOf, Range
from marshmallow import INCLUDE, ValidationError, validates_schema

from multiagent.server.accounts import ROLES
from multiagent.server.limits import INT64_MAX
from multiagent.vocabulary import JobState, Phase


class AgentIn(Schema):
    state = fields.String()
    comment = fields.String()
    queues = fields.List(fields.String())
    location = fields.String()
    provision_type = fields.String()
    identifier = fields.String()
    job_id = fields.String()
    log = fields.List(fields.String())


class ResultPost(Schema):
    status = fields.Dict(
        keys=fields.String(validate=OneOf(Phase.ALL)), values=fields.Integer(strict=True)
    )
    device_info = fields.Dict()
    job_state = fields.String()


class LogPost(Schema):
    fragment_number = fields.Integer(strict=True, required=True)
    timestamp = fields.DateTime(required=True)
    phase = fields.String(required=True, validate=OneOf(Phase.ALL))
    log_data = fields.String(required=True)


class ProvisionLogIn(Schema):
    job_id = fields.String(required=True)
    exit_code = fields.Integer(strict=True, required=True)
    detail = fields.String()


class RefreshTokenIn(Schema):
    refresh_token = fields.String(required=True, validate=Length(min=1))


class ActionIn(Schema):
    action = fields.String(required=True, validate=OneOf(["cancel"]))


class JobEvent(Schema):
    event_name = fields.String(required=True)
    timestamp = fields.String(required=True)
    detail = fields.String()


class StatusUpdate(Schema):
    agent_id = fields.String()
    job_queue = fields.String()
    job_status_webhook = fields.String(required=True)
    events = fields.List(fields.Nested(JobEvent))


class AdvertisedQueues(Schema):
    """`{queue: description}`: the names are data, so no field is declared."""

    class Meta:
        unknown = INCLUDE

    @validates_schema
    def _names_and_descriptions(self, data: dict[str, Any], **_: Any) -> None:
        for name, description in data.items():
            if not name:
                raise ValidationError("A queue name must not be empty.")
            if not isinstance(description, str):
                raise ValidationError(f"The description of queue {name!r} must be a string.")


def _bad_image_name(name: str) -> bool:
    # Upstream stores images under `queues.<queue>.images.<name>` in MongoDB.
    return not name or name.startswith("$") or "." in name or "\0" in name


class AdvertisedImages(Schema):
    """`{queue: {image: provision data as YAML text}}`."""

    class Meta:
        unknown = INCLUDE

    @validates_schema
    def _queues_and_images(self, data: dict[str, Any], **_: Any) -> None:
        for queue, images in data.items():
            if not queue or not isinstance(images, dict):
                raise ValidationError(f"Queue {queue!r} needs {{image name: provision data}}.")
            for image, provision in images.items():
                if _bad_image_name(image) or not isinstance(provision, str):
                    raise ValidationError(f"Invalid image {image!r} in queue {queue!r}.")


class RestrictedQueueIn(Schema):
    client_id = fields.String(required=True)


class ClientPermissionsIn(Schema):
    client_secret = fields.String(validate=Length(min=15))
    max_priority = fields.Dict(keys=fields.String(), values=fields.Integer(strict=True))
    max_reservation_time = fields.Dict(keys=fields.String(), values=fields.Integer(strict=True))
    role = fields.String(validate=OneOf(ROLES))
    email = fields.Email()


class SecretIn(Schema):
    value = fields.String(required=True, validate=Length(min=1))
    expire_after = fields.Integer(strict=True, allow_none=True, validate=Range(min=1))
    ephemeral = fields.Boolean()

    @validates_schema
    def _one_lifetime(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("ephemeral") and "expire_after" in data:
            raise ValidationError("An ephemeral secret takes no expire_after.")


class Upload(Schema):
    """A tarball as multipart field `file`. Documented only: a missing part is upstream's
    400 from werkzeug, which the view answers, not a 422."""

    file = fields.File(required=True)


# -- query strings ----------------------------------------------------------------------
# States `GET /v1/job/search` accepts (upstream's list; `active` = not finished).
# (`waiting`, `running` and the agent's `complete` are refused, as upstream does.)
SEARCH_ACTIVE = "active"
SEARCH_STATES = (
    *Phase.BEFORE_CLEANUP,
    JobState.ALLOCATED,
    Phase.CLEANUP,
    JobState.CANCELLED,
    JobState.COMPLETED,
    SEARCH_ACTIVE,
)


class JobSearchQuery(Schema):
    tags = fields.List(fields.String())
    match = fields.String(validate=OneOf(["any", "all"]), load_default="any")
    state = fields.List(fields.String(validate=OneOf(SEARCH_STATES)))


class QueuesQuery(Schema):
    queue = fields.List(fields.String())


class LogQuery(Schema):
    """The log reader's query; upstream answers a bad one with 400, not 422, so the view
    loads it itself."""

    # Query values are text: not strict, but bounded to what SQLite holds.
    start_fragment = fields.Integer(load_default=0, validate=Range(min=0, max=INT64_MAX))
    start_timestamp = fields.DateTime(load_default=None)
    phase = fields.String(load_default=None, validate=OneOf(Phase.ALL))
    # The local server's `format=text`: the whole log as one text.
    format = fields.String(validate=OneOf(["text"]))


class AgentsPageQuery(Schema):
    """The Agents page's filters and order; documented only, any value shows a page."""

    state = fields.String()
    queue = fields.String()
    location = fields.String()
    sort = fields.String()
    dir = fields.String()
