"""The upstream agent config file (`testflinger-agent.conf`, YAML): upstream's keys and
defaults, unknown keys rejected, every value checked by one rule per key.

`check_setting(key, value)` is that rule, public so that another module (tf-fleet's
fleet file) validates an upstream key exactly as the agent will. Upstream's newer
`links` and `control_host` keys are not supported.
"""

from __future__ import annotations

import os

from multiagent import jsonio
from multiagent.vocabulary import Phase

TYPE_CHECKING = False  # dataclasses/typing cost ~15 ms of start-up; a plain class will do
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class ConfigError(Exception):
    """One-line reason; `str()` names the file and, when known, the key."""

    def __init__(self, path: str, reason: str, key: str | None = None):
        self.path = path
        self.key = key
        self.reason = reason
        where = f"{path}: key {key!r}: " if key else f"{path}: "
        super().__init__(where + reason)


# -- one rule per key ------------------------------------------------------------------
def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_nonempty_str(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_positive_number(value: object) -> bool:
    # Upstream takes an int; a float is accepted too so tests can poll every 0.2 s.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return 0 < value < float("inf")


def _is_queue_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_nonempty_str(q) for q in value)


def _is_str_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        _is_nonempty_str(k) and isinstance(v, str) for k, v in value.items()
    )


def _is_images(value: object) -> bool:
    return isinstance(value, dict) and all(
        _is_nonempty_str(queue) and _is_str_map(images) for queue, images in value.items()
    )


# logging's level names, without importing logging to list them (the agent's
# setup_logging upper-cases the value).
LOGGING_LEVELS = ("CRITICAL", "FATAL", "ERROR", "WARNING", "WARN", "INFO", "DEBUG", "NOTSET")


def _is_server_address(value: object) -> bool:
    if not _is_nonempty_str(value):
        return False
    from multiagent.agent.wire import split_address  # the client's own reading of it

    try:
        scheme, host, _ = split_address(value)  # type: ignore[arg-type]
    except ValueError:
        return False
    return scheme in ("http", "https") and host != ""


def _is_logging_level(value: object) -> bool:
    return isinstance(value, str) and value.upper() in LOGGING_LEVELS


_STRING = (_is_str, "a string")
_PATH = (_is_nonempty_str, "a non-empty path")
_POSITIVE_INT = (_is_positive_int, "a positive whole number")

# key -> (rule, what the rule expects, for the message)
_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "agent_id": (_is_nonempty_str, "a non-empty string"),
    "identifier": _STRING,
    "location": _STRING,
    "polling_interval": (_is_positive_number, "a positive number of seconds"),
    "server_address": (
        _is_server_address,
        "a server address: [http[s]://]host[:port] with a port from 1 to 65535",
    ),
    "execution_basedir": _PATH,
    "logging_basedir": _PATH,
    "results_basedir": _PATH,
    "logging_level": (_is_logging_level, f"one of {', '.join(LOGGING_LEVELS)}"),
    "logging_quiet": (_is_bool, "true or false"),
    "job_queues": (_is_queue_list, "a non-empty list of non-empty queue names"),
    **{f"{phase}_command": _STRING for phase in Phase.ALL},
    "provision_type": _STRING,
    "global_timeout": _POSITIVE_INT,
    "output_timeout": _POSITIVE_INT,
    "advertised_queues": (_is_str_map, "a mapping of queue names to descriptions"),
    "advertised_images": (_is_images, "a mapping of queue names to {image name: string}"),
    "output_bytes": _POSITIVE_INT,
}

# Every key `testflinger-agent.conf` may hold, in upstream's order.
UPSTREAM_KEYS: tuple[str, ...] = tuple(_RULES)
REQUIRED_KEYS = ("agent_id", "server_address", "job_queues")
# The value an absent (or empty, `key:`) optional key takes.
DEFAULTS: dict[str, Any] = {
    "identifier": None,
    "location": "",
    "polling_interval": 10,
    "execution_basedir": "/tmp/testflinger/run",
    "logging_basedir": "/tmp/testflinger/logs",
    "results_basedir": "/tmp/testflinger/results",
    "logging_level": "INFO",
    "logging_quiet": False,
    **{f"{phase}_command": "" for phase in Phase.ALL},
    "provision_type": "",
    "global_timeout": None,
    "output_timeout": None,
    "advertised_queues": None,
    "advertised_images": None,
    "output_bytes": 10 * 1024 * 1024,
}


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) <= 40 else "a long string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def check_setting(key: str, value: object) -> str | None:
    """None when `value` is valid for the upstream key `key`, else a short reason such as
    "expected a positive whole number, got -1". An unknown key is a reason too. `None`
    (an empty YAML value) is checked like any other value: the loader, not this rule,
    lets it stand for the default of an optional key."""
    rule = _RULES.get(key)
    if rule is None:
        return "not a key of testflinger-agent.conf"
    test, expected = rule
    return None if test(value) else f"expected {expected}, got {_describe(value)}"


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
        if key not in _RULES:
            raise ConfigError(path, "unknown key", key=str(key))
    values: dict[str, Any] = {}
    for key in UPSTREAM_KEYS:
        value = data.get(key)
        if value is None and key not in REQUIRED_KEYS:
            values[key] = DEFAULTS[key]
            continue
        if key not in data:
            raise ConfigError(path, "required key missing", key=key)
        reason = check_setting(key, value)
        if reason is not None:
            raise ConfigError(path, reason, key=key)
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
    data = _as_json(text)
    if data is None:
        yaml = _yaml_module()
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(path, f"invalid YAML{where}") from None
    return validate(os.fspath(path), data)


def _as_json(text: str) -> object | None:
    """The config as tf-fleet writes it: comment lines, then a JSON object (JSON is YAML,
    so upstream's agent reads the same file). None for anything else, which is parsed as
    YAML: importing a YAML parser costs ~15 ms of CPU and ~1 MiB per agent."""
    body = text.lstrip()
    while body.startswith("#"):
        body = body.partition("\n")[2].lstrip()
    if not body.startswith("{"):
        return None
    try:
        data = jsonio.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _yaml_module() -> Any:
    try:
        import yaml
    except ImportError:
        import sys

        if not sys.flags.no_site:
            raise
        # Started without site (boot.py): site-packages join sys.path only now.
        import site

        site.main()
        import yaml
    return yaml
