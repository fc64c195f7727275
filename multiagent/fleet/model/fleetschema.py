"""The fleet file's schema: each section's keys, rules, defaults and messages, as data.

What a key may hold is said once, here; `fleetfile` reads a file with these sections
and builds the `Fleet`. Keys the fleet file shares with `testflinger-agent.conf` are
checked by tf-agent's own rule for each (`check_setting`), durations by the one
`parse_duration`, so the fleet file and the agent never disagree on a word.
"""

from __future__ import annotations

import ipaddress
import re
from functools import partial
from typing import Any

from multiagent.agent import config as agent_config
from multiagent.fleet.model.schema import Key, Rule, accepts, anything, kind_of, one_of, section
from multiagent.vocabulary import DEFAULT_RESTART_DIR, parse_duration

DEFAULT_EMBEDDED_HOST = "127.0.0.1"
DEFAULT_EMBEDDED_PORT = 8585
DEFAULT_RESTART_TIMEOUT = 6 * 3600
DEFAULT_CANARY_SOAK = 30
DEFAULT_METRICS_HOST = "127.0.0.1"  # where tf-agent serves /metrics unless told otherwise

# A user name as useradd takes it (supervisord's `user=` line, pwd lookups).
USER_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A host name or address for `metrics.host`: what Prometheus connects to.
HOST_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")
URL_RE = re.compile(r"https?://[^/\s]+")
FLEET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


# -- rules -----------------------------------------------------------------------------
def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _is_str(value: Any) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {kind_of(value)}"


def _is_positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected a whole number, got {kind_of(value)}"
    return None if value > 0 else f"must be greater than 0, got {value}"


def _is_port(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        return f"expected a port number 1-65535, got {value!r}"
    return None


def _is_mapping(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"expected a mapping, got {kind_of(value)}"


def _is_environment(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"expected a mapping of variable names to values, got {kind_of(value)}"
    for key, item in value.items():
        if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key):
            return f"{key!r} is not a valid environment variable name"
        message = _environment_value(item)
        if message:
            return f"{key}: {message}"
    return None


def _environment_value(item: Any) -> str | None:
    """What supervisord's `environment=` line can carry, quoted."""
    if not isinstance(item, (str, int, float, bool)):
        return f"expected a string or number, got {kind_of(item)}"
    text = str(item)
    if '"' in text and "'" in text:
        return "a value cannot hold both ' and \" (supervisord cannot quote it)"
    if text and (text[0] in "'\"" or text[-1] in "'\""):
        return "a value cannot start or end with a quote (supervisord strips it)"
    if any(ord(c) < 32 for c in text):
        return "control characters (newlines, tabs) are not allowed"
    return None


def _is_user(value: Any) -> str | None:
    if not isinstance(value, str) or not USER_NAME_RE.fullmatch(value):
        return f"expected a user name (letters, digits, '_', '.', '-'), got {value!r}"
    return None


def _is_command(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"expected a command, got {kind_of(value)}"
    if _has_control(value):
        return "control characters (newlines, tabs, NUL) are not allowed"
    return None


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return len(text) <= 253 and bool(HOST_NAME_RE.fullmatch(text))


def _path_rule(expected: str, *, absolute: bool = False, optional: bool = False) -> Rule:
    """A path written in the file: a non-empty string without control characters."""

    def rule(value: Any) -> Any:
        if optional and value is None:
            return None
        if (
            not isinstance(value, str)
            or not value
            or _has_control(value)
            or (absolute and not value.startswith("/"))
        ):
            raise ValueError(f"expected {expected}, got {value!r}")
        return value

    return rule


def _embedded_host(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a host name or address, got {kind_of(value)}")
    return value


def _boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _metrics_host(value: Any) -> Any:
    if not isinstance(value, str) or not _is_host(value):
        raise ValueError(f"expected a host name or IP address, got {value!r}")
    return value


def _timeout(value: Any) -> float:
    seconds = parse_duration(value)
    if not seconds:
        raise ValueError(f"a timeout must be longer than 0, got {value!r}")
    return seconds


_directory = _path_rule("a directory path")


def _state_dir(value: Any) -> Any:
    # Absent or empty (`state_dir:`): the default beside the fleet file.
    return None if value is None else _directory(value)


def _soak(value: Any) -> float:
    return parse_duration(value)  # 0 (or `0s`) is no soak


def _fleet_name(value: Any) -> Any:
    if value is not None and (not isinstance(value, str) or not FLEET_NAME_RE.fullmatch(value)):
        raise ValueError(f"expected 1-64 letters, digits, '.', '_' or '-', got {value!r}")
    return value


def _must_be(wanted: Any, message: str) -> Rule:
    def rule(value: Any) -> Any:
        if value is not wanted:
            raise ValueError(message)
        return value

    return rule


# -- sections --------------------------------------------------------------------------
TOP = section(
    "a mapping",
    Key("name", _fleet_name),  # the `fleet` label of its metrics (default: the state dir)
    # An agent name the server heard from elsewhere: `plan`/`up` warn, or `up` refuses.
    Key("duplicate_names", one_of("warn", "refuse"), "warn"),
    Key("server", anything, "embedded"),  # `embedded`, a URL or EMBEDDED_SERVER
    Key("state_dir", _state_dir),
    Key("supervisor", anything, {}),  # SUPERVISOR
    Key("restart", anything, {}),  # RESTART
    Key("metrics", anything),  # METRICS, or none
    Key("defaults", anything),  # DEFAULT_SETTINGS
    Key("agents", anything),  # name -> AGENT_SETTINGS
)

EMBEDDED_NEEDED = (
    "a server mapping needs `embedded: true`"
    " (for a remote server write its URL as `server: http://...`)"
)
EMBEDDED_SERVER = section(
    "a mapping",
    Key("embedded", _must_be(True, EMBEDDED_NEEDED), required=EMBEDDED_NEEDED),
    Key("host", _embedded_host, DEFAULT_EMBEDDED_HOST),
    Key("port", accepts(_is_port), DEFAULT_EMBEDDED_PORT),
    # Every agent its own credential (an agent-role client and its refresh token in
    # <agent_dir>/token.json, passed with --token-file).
    Key("agent_tokens", _boolean, False),
)

SUPERVISOR = section(
    "a mapping",
    Key("mode", one_of("private", "system"), "private"),
    Key("config", _path_rule("a file path", optional=True)),  # system mode's supervisord.conf
)
SYSTEM_SUPERVISOR_CONFIG = "/etc/supervisor/supervisord.conf"

RESTART = section(
    "a mapping",
    Key("method", one_of("signal", "file"), "signal"),
    Key("restart_dir", _path_rule("an absolute path", absolute=True), DEFAULT_RESTART_DIR),
    Key("timeout", _timeout, float(DEFAULT_RESTART_TIMEOUT)),
    # How long canaries stay under watch before the rest follow (`--canary-soak`).
    Key("canary_soak", _soak, float(DEFAULT_CANARY_SOAK)),
)

METRICS = section(
    "a mapping such as {base_port: 9400}",
    Key("base_port", accepts(_is_port), required="required: the first tf-agent's metrics port"),
    Key("host", _metrics_host, DEFAULT_METRICS_HOST),
)

# An agent's settings: any key of upstream's testflinger-agent.conf but the two tf-fleet
# derives, each checked by tf-agent's own rule, and the fleet's own keys. Their defaults
# are `Agent`'s: an agent's settings are read unfilled, then overlaid on `defaults:`.
DERIVED_KEYS = ("agent_id", "server_address")
DERIVED = (
    "is derived by tf-fleet (agent_id is the agent's name,"
    " server_address comes from `server`); remove it"
)
UPSTREAM_KEYS = tuple(k for k in agent_config.UPSTREAM_KEYS if k not in DERIVED_KEYS)
FLEET_KEYS = (
    Key("agent_command", accepts(_is_command)),
    Key("environment", accepts(_is_environment)),
    Key("user", accepts(_is_user)),
    Key("stopwaitsecs", accepts(_is_positive_int)),
    Key("startsecs", accepts(_is_positive_int)),
    Key("device", accepts(_is_mapping)),
    Key("token_file", accepts(_is_str)),
    Key("metrics_port", accepts(_is_port)),  # its own port instead of base_port + index
)
# What to say of a key testflinger-agent.conf requires (tf-agent's REQUIRED_KEYS) when an
# agent's settings, overlaid on the defaults, lack it.
WHY_REQUIRED = {"job_queues": "required: the queues this agent takes jobs from"}


def _upstream_key(key: str) -> Key:
    required = key in agent_config.REQUIRED_KEYS
    why = WHY_REQUIRED.get(key, "required") if required else None
    return Key(key, accepts(partial(agent_config.check_setting, key)), required=why)


AGENT_SETTINGS = section(
    "a mapping of settings",
    *(_upstream_key(k) for k in UPSTREAM_KEYS),
    *FLEET_KEYS,
    refused=dict.fromkeys(DERIVED_KEYS, DERIVED),
)
DEFAULT_SETTINGS = section(
    "a mapping of agent settings",
    *(key for key in AGENT_SETTINGS.keys.values() if key.name != "metrics_port"),
    refused={
        **AGENT_SETTINGS.refused,
        "metrics_port": "a metrics port belongs to one agent: set it under that agent"
        " (the others get `metrics.base_port` plus their index)",
    },
)
# Keys whose defaults and agent values are merged key by key, not replaced.
MERGED_KEYS = ("environment", "device")
