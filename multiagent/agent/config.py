"""The upstream agent config file (YAML): same keys, same defaults, unknown keys rejected."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # dataclasses/typing cost ~15 ms of start-up; a plain class will do
if TYPE_CHECKING:
    from typing import Any

PHASES = ("setup", "provision", "firmware_update", "test", "allocate", "reserve")
ALL_PHASES = (*PHASES, "cleanup")


class ConfigError(Exception):
    """One-line reason; `str()` names the file and, when known, the key."""

    def __init__(self, path: str, reason: str, key: str | None = None):
        self.path = path
        self.key = key
        self.reason = reason
        where = f"{path}: key {key!r}: " if key else f"{path}: "
        super().__init__(where + reason)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    # polling_interval: upstream says int; a float is accepted too so tests can
    # poll every 0.2 s (documented in the README).
    return (_is_int(value) or isinstance(value, float)) and value > 0


def _str_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
    )


def _images(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(q, str) and _str_dict(images) for q, images in value.items()
    )


# key -> (check, type name for the message, required, default)
_SCHEMA: dict[str, tuple[Any, str, bool, Any]] = {
    "agent_id": (lambda v: isinstance(v, str) and v != "", "non-empty str", True, None),
    "identifier": (lambda v: isinstance(v, str), "str", False, None),
    "location": (lambda v: isinstance(v, str), "str", False, ""),
    "polling_interval": (_is_number, "positive int", False, 10),
    "server_address": (lambda v: isinstance(v, str) and v != "", "non-empty str", True, None),
    "execution_basedir": (lambda v: isinstance(v, str), "str", False, "/tmp/testflinger/run"),
    "logging_basedir": (lambda v: isinstance(v, str), "str", False, "/tmp/testflinger/logs"),
    "results_basedir": (lambda v: isinstance(v, str), "str", False, "/tmp/testflinger/results"),
    "logging_level": (lambda v: isinstance(v, str), "str", False, "INFO"),
    "logging_quiet": (lambda v: isinstance(v, bool), "bool", False, False),
    "job_queues": (
        lambda v: isinstance(v, list) and all(isinstance(q, str) for q in v),
        "list of str",
        True,
        None,
    ),
    **{
        f"{phase}_command": (lambda v: isinstance(v, str), "str", False, "") for phase in ALL_PHASES
    },
    "provision_type": (lambda v: isinstance(v, str), "str", False, ""),
    "global_timeout": (_is_int, "int", False, None),
    "output_timeout": (_is_int, "int", False, None),
    "advertised_queues": (_str_dict, "dict of str -> str", False, None),
    "advertised_images": (_images, "dict of queue -> {image: str}", False, None),
    "output_bytes": (_is_int, "int", False, 10 * 1024 * 1024),
}


class AgentConfig:
    __slots__ = ("path", "values")

    def __init__(self, path: str, values: dict[str, Any] | None = None):
        self.path = path
        self.values: dict[str, Any] = {} if values is None else values

    def __getattr__(self, name: str) -> Any:
        # Called only for names that are not real attributes: config keys.
        try:
            values = object.__getattribute__(self, "values")
        except AttributeError:
            raise AttributeError(name) from None
        if name in values:
            return values[name]
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"AgentConfig(path={self.path!r}, values={self.values!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AgentConfig):
            return NotImplemented
        return (self.path, self.values) == (other.path, other.values)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def command(self, phase: str) -> str:
        return self.values.get(f"{phase}_command") or ""

    def string_items(self) -> dict[str, str]:
        """Every string-valued key, exported to phase commands as upstream does."""
        return {k: v for k, v in self.values.items() if isinstance(v, str)}


def validate(path: str, data: Any) -> AgentConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, "top level must be a mapping")
    for key in data:
        if key not in _SCHEMA:
            raise ConfigError(path, "unknown key", key=str(key))
    values: dict[str, Any] = {}
    for key, (check, type_name, required, default) in _SCHEMA.items():
        if key not in data or (data[key] is None and not required):
            if required:
                raise ConfigError(path, "required key missing", key=key)
            values[key] = default
            continue
        value = data[key]
        if not check(value):
            raise ConfigError(
                path, f"expected {type_name}, got {type(value).__name__} {value!r}", key=key
            )
        values[key] = value
    address = values["server_address"]
    if "://" not in address:
        values["server_address"] = "http://" + address
    return AgentConfig(path=path, values=values)


def load(path: str) -> AgentConfig:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from None
    import yaml  # only here: the loop never needs it again

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(path, f"invalid YAML{where}") from None
    return validate(os.fspath(path), data)
