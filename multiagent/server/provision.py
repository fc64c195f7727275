"""`provision_data` of a job: one of upstream's device schemas must load it with no extra key.

The schemas are tried in upstream's order and the first that loads wins; none loading is
upstream's 422 `{"provision_data": {"_schema": ["Invalid provision data schema."]}}`.
A server started with `--any-provision-data` (home-made connectors) takes any object and
checks only its attachment list.
"""

from __future__ import annotations

from typing import Any

from apiflask import Schema, fields
from apiflask.validators import Length
from marshmallow import INCLUDE, ValidationError, validates_schema
from marshmallow_oneofschema import OneOfSchema

from multiagent.server.policy import policy

INVALID_PROVISION = "Invalid provision data schema."
ANY = "any"


class Attachment(Schema):
    agent = fields.String(required=True)
    device = fields.String()


def attachments() -> fields.List:
    return fields.List(fields.Nested(Attachment))


class CM3(Schema):
    url = fields.URL(required=True)


class MAAS(Schema):
    distro = fields.String()
    kernel = fields.String()
    user_data = fields.String()
    disks = fields.List(fields.Raw())
    ephemeral = fields.Boolean()


class Multi(Schema):
    jobs = fields.List(fields.Raw(), required=True, validate=Length(min=1))


class MuxPi(Schema):
    url = fields.URL()
    use_attachment = fields.String()
    attachments = attachments()
    create_user = fields.Boolean()
    boot_check_url = fields.String()
    media = fields.String()

    @validates_schema
    def _has_image(self, data: dict[str, Any], **_: Any) -> None:
        if "url" not in data and "use_attachment" not in data:
            raise ValidationError("An image is needed: `url` or `use_attachment`.")


class NoProvision(Schema):
    skip = fields.Boolean()


class OEMAutoinstall(Schema):
    url = fields.URL()
    attachments = attachments()
    token_file = fields.String()
    user_data = fields.String()
    redeploy_cfg = fields.String()
    authorized_keys = fields.String()
    control_host_iso_url = fields.URL()
    control_host_iso_type = fields.String()
    update_user_data = fields.Boolean()


class OEMScript(Schema):
    url = fields.URL(required=True)


class _IoTImage(Schema):
    """A control host's IoT image comes from exactly one place."""

    url = fields.URL()
    urls = fields.List(fields.Raw())
    attachments = attachments()

    @validates_schema
    def _one_source(self, data: dict[str, Any], **_: Any) -> None:
        sources: list[str] = [k for k in ("url", "urls") if k in data]
        if len(data.get("attachments") or []) == 1:
            sources.append("attachments")
        if len(sources) != 1:
            raise ValidationError("Exactly one image source: `url`, `urls` or one attachment.")


class IoTCustom(_IoTImage):
    provision_plan = fields.Dict(required=True)


class IoTPreset(_IoTImage):
    preset = fields.String(required=True)


class _RobotTasks(Schema):
    """The KVM control hosts drive an installer with robot tasks."""

    robot_tasks = fields.List(fields.Raw(), required=True)


class KVMAutoinstall(_RobotTasks):
    url = fields.URL(required=True)


class KVMGeneric(KVMAutoinstall):
    live_image = fields.Boolean(required=True)
    wait_until_ssh = fields.Boolean(required=True)


class KVMOEM2204(_RobotTasks):
    alloem_url = fields.URL(required=True)


class KVMPreset(Schema):
    preset = fields.String(required=True)


class AnyProvisionData(Schema):
    """What a home-made connector reads is its own business; attachments are the server's."""

    class Meta:
        unknown = INCLUDE

    attachments = attachments()


DEVICE_SCHEMAS: dict[str, type[Schema]] = {
    "cm3": CM3,
    "maas": MAAS,
    "multi": Multi,
    "muxpi": MuxPi,
    "noprovision": NoProvision,
    "oem_autoinstall": OEMAutoinstall,
    "oem_script": OEMScript,
    "control_host_iot_custom": IoTCustom,
    "control_host_iot_preset": IoTPreset,
    "control_host_kvm_autoinstall": KVMAutoinstall,
    "control_host_kvm_generic": KVMGeneric,
    "control_host_kvm_oem_2204": KVMOEM2204,
    "control_host_kvm_preset": KVMPreset,
}


def _lenient() -> bool:
    return policy().any_provision_data


class ProvisionData(OneOfSchema):
    """The data says no type: the first device schema that loads it is its type."""

    type_schemas = {**DEVICE_SCHEMAS, ANY: AnyProvisionData}

    def _load(self, data: Any, *, partial: Any = None, unknown: Any = None, **kwargs: Any) -> Any:
        if _lenient():
            # OneOfSchema hands its own `unknown` (refuse) down to the chosen schema.
            unknown = INCLUDE
        return super()._load(data, partial=partial, unknown=unknown, **kwargs)

    def get_data_type(self, data: dict[str, Any]) -> str:
        if _lenient():
            return ANY
        for name, schema in DEVICE_SCHEMAS.items():
            if not schema().validate(data):
                return name
        raise ValidationError(INVALID_PROVISION)
