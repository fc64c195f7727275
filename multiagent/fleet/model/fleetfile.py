"""The fleet file: schema, defaults, and validation that names file, line, agent and field.

`load_fleet` is pure apart from reading the one file: it returns a `Fleet` or raises
`FleetError` carrying every problem found, so an admin fixes them all in one go.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from multiagent.agent import config as agent_config
from multiagent.agent.config import check_setting
from multiagent.fleet.errors import EXIT_INVALID, UserError
from multiagent.fleet.model.yamlsource import Located, YamlSyntaxError, load_located
from multiagent.vocabulary import RESTART_FILE_PREFIX, parse_duration

# An agent's name becomes a supervisord program, file and directory names, the restart
# file and a URL path: ASCII letters, digits, '.', '_' and '-', starting with a letter or
# digit, at most 64 characters. Two names may not differ only by case or by '-' (tf-agent
# also obeys the restart file named without dashes, as upstream's does).
AGENT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
AGENT_NAME_RULE = (
    "an agent name must be 1-64 letters, digits, '.', '_' or '-',"
    " starting with a letter or digit (it becomes a file and program name)"
)
# A user name as useradd takes it (supervisord's `user=` line, pwd lookups).
USER_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
# A fleet file larger than this is refused before it is parsed (a fleet of 2,000
# agents is a few hundred KB).
MAX_FLEET_BYTES = 2 * 1024 * 1024
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SERVER_PROGRAM = "tf-fleet-server"
# What a supervisord program of a fleet runs.
TF_AGENT = "tf-agent"
UPSTREAM = "upstream"  # testflinger-agent, or any command taking -c CONF
SERVER = "server"  # the embedded local server
RESERVED_NAMES = {SERVER_PROGRAM}
DEFAULT_EMBEDDED_HOST = "127.0.0.1"
DEFAULT_EMBEDDED_PORT = 8585
DEFAULT_RESTART_TIMEOUT = 6 * 3600
DEFAULT_METRICS_HOST = "127.0.0.1"  # where tf-agent serves /metrics unless told otherwise
# A host name or address for `metrics.host`: what Prometheus connects to.
HOST_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")

# Keys of upstream's testflinger-agent.conf that a fleet file may set (agent_id and
# server_address are derived). Each maps to a checker returning an error or None.
Checker = Callable[[Any], "str | None"]


def _is_str(value: Any) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {_kind(value)}"


def _is_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected a whole number, got {_kind(value)}"
    return None


def _is_positive_int(value: Any) -> str | None:
    return _is_int(value) or (None if value > 0 else f"must be greater than 0, got {value}")


def _is_port(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        return f"expected a port number 1-65535, got {value!r}"
    return None


def _is_mapping(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"expected a mapping, got {_kind(value)}"


def _is_environment(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"expected a mapping of variable names to values, got {_kind(value)}"
    for key, item in value.items():
        if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key):
            return f"{key!r} is not a valid environment variable name"
        if not isinstance(item, (str, int, float, bool)):
            return f"{key}: expected a string or number, got {_kind(item)}"
        text = str(item)
        if '"' in text and "'" in text:
            return f"{key}: a value cannot hold both ' and \" (supervisord cannot quote it)"
        if text and (text[0] in "'\"" or text[-1] in "'\""):
            return f"{key}: a value cannot start or end with a quote (supervisord strips it)"
        if any(ord(c) < 32 for c in text):
            return f"{key}: control characters (newlines, tabs) are not allowed"
    return None


# Keys of upstream's testflinger-agent.conf a fleet file may set, checked by tf-agent's
# own rule for each (one rule per setting); agent_id and server_address are derived.
DERIVED_KEYS = {"agent_id", "server_address"}
UPSTREAM_KEYS: dict[str, Checker] = {
    key: partial(check_setting, key)
    for key in agent_config.UPSTREAM_KEYS
    if key not in DERIVED_KEYS
}


def _is_user(value: Any) -> str | None:
    if not isinstance(value, str) or not USER_NAME_RE.fullmatch(value):
        return f"expected a user name (letters, digits, '_', '.', '-'), got {value!r}"
    return None


def _is_command(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"expected a command, got {_kind(value)}"
    if _has_control(value):
        return "control characters (newlines, tabs, NUL) are not allowed"
    return None


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


FLEET_KEYS: dict[str, Checker] = {
    "agent_command": _is_command,
    "environment": _is_environment,
    "user": _is_user,
    "stopwaitsecs": _is_positive_int,
    "startsecs": _is_positive_int,
    "device": _is_mapping,
    "token_file": _is_str,
    "metrics_port": _is_port,  # this agent's own metrics port instead of base_port + index
}

AGENT_KEYS = {**UPSTREAM_KEYS, **FLEET_KEYS}
MERGED_KEYS = {"environment", "device"}  # defaults and agent values are merged, not replaced
TOP_KEYS = ("server", "state_dir", "supervisor", "restart", "metrics", "defaults", "agents")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    agent: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        who = f"agent {self.agent!r}, " if self.agent else ""
        return f"{where}: {who}{self.field}: {self.message}"


class FleetError(UserError):
    """The fleet file (or what the host makes of it) is invalid: every problem at once."""

    exit_status = EXIT_INVALID

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems

    def lines(self) -> list[str]:
        count = len(self.problems)
        return [f"error: {p}" for p in self.problems] + [
            f"{count} problem{'s' if count != 1 else ''}; nothing was changed."
        ]


@dataclass(frozen=True)
class ServerSettings:
    url: str
    embedded: bool
    host: str = DEFAULT_EMBEDDED_HOST
    port: int = DEFAULT_EMBEDDED_PORT
    # The embedded server gives every agent its own credential (an agent-role client and
    # its refresh token in <agent_dir>/token.json, passed with --token-file).
    agent_tokens: bool = False


@dataclass(frozen=True)
class SupervisorSettings:
    mode: str = "private"  # private | system
    config: str | None = None  # the system supervisord.conf


@dataclass(frozen=True)
class RestartSettings:
    method: str = "signal"  # signal | file
    restart_dir: str = "/tmp"
    timeout: float = DEFAULT_RESTART_TIMEOUT


@dataclass(frozen=True)
class Agent:
    name: str
    upstream: dict[str, Any]  # only upstream testflinger-agent.conf keys, without derived ones
    agent_command: str = "tf-agent"
    environment: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    stopwaitsecs: int = 30
    startsecs: int = 2
    device: dict[str, Any] | None = None
    token_file: str | None = None  # the agent's credential, passed as --token-file
    metrics_port: int | None = None  # its own `metrics_port:`, if the fleet file pins one

    @property
    def kind(self) -> str:
        return command_kind(self.agent_command.split())

    @property
    def is_tf_agent(self) -> bool:
        """tf-agent writes a status file and takes our extra options; upstream does not."""
        return self.kind == TF_AGENT


def command_kind(words: list[str]) -> str:
    """TF_AGENT for a command that runs tf-agent (by its console script or as
    `python -m multiagent.agent`), else UPSTREAM: the one rule, for the fleet file's
    agent_command and for the command line of a program file alike."""
    if words and os.path.basename(words[0]) == "tf-agent":
        return TF_AGENT
    if any(words[i : i + 2] == ["-m", "multiagent.agent"] for i in range(len(words) - 1)):
        return TF_AGENT
    return UPSTREAM


@dataclass(frozen=True)
class MetricsSettings:
    """`metrics:`: each tf-agent serves /metrics on its port (`-p`) at `host`."""

    base_port: int
    host: str = DEFAULT_METRICS_HOST
    ports: dict[str, int] = field(default_factory=dict)  # tf-agent name -> its port

    @property
    def address(self) -> str:
        """`host` as it goes before `:port` in a target."""
        return f"[{self.host}]" if ":" in self.host else self.host


@dataclass(frozen=True)
class Fleet:
    path: Path
    server: ServerSettings
    state_dir: Path
    supervisor: SupervisorSettings
    restart: RestartSettings
    agents: dict[str, Agent]
    metrics: MetricsSettings | None = None

    @property
    def identity(self) -> str:
        """What marks this fleet's files and programs: its state dir."""
        return f"state dir {self.state_dir}"

    @property
    def server_program(self) -> str:
        """The embedded server's program: in a shared (system) supervisord, one per fleet."""
        if self.supervisor.mode == "private":
            return SERVER_PROGRAM
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:8]
        return f"{SERVER_PROGRAM}-{digest}"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


class _Collector:
    def __init__(self, file: str, located: Located):
        self.file = file
        self.located = located
        self.problems: list[Problem] = []

    def add(self, path: tuple[Any, ...], message: str, agent: str | None = None) -> None:
        field_name = ".".join(str(p) for p in path) if path else "(file)"
        self.problems.append(
            Problem(self.file, self.located.line(path), agent, field_name, message)
        )

    def unknown(
        self,
        path: tuple[Any, ...],
        key: Any,
        known: list[str],
        agent: str | None = None,
        extra: str = "",
    ) -> None:
        import difflib

        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.add(path + (key,), f"unknown key{hint}{extra}", agent)


def load_fleet(path: str | os.PathLike[str], state_dir_override: str | None = None) -> Fleet:
    fleet_path = Path(path)
    display = str(path)
    try:
        with open(fleet_path, "rb") as handle:
            data = handle.read(MAX_FLEET_BYTES + 1)
    except OSError as exc:
        raise FleetError(
            [Problem(display, None, None, "(file)", f"cannot read the fleet file: {exc.strerror}")]
        ) from exc
    if len(data) > MAX_FLEET_BYTES:
        message = f"the fleet file is larger than {MAX_FLEET_BYTES // (1024 * 1024)} MB"
        raise FleetError([Problem(display, None, None, "(file)", message)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8: byte {data[exc.start]:#04x} cannot be read"
        raise FleetError([Problem(display, line, None, "(file)", message)]) from exc
    return parse_fleet(text, fleet_path, display, state_dir_override)


def parse_fleet(
    text: str, fleet_path: Path, display: str | None = None, state_dir_override: str | None = None
) -> Fleet:
    """The Fleet in `text`, or FleetError: whatever the text holds, never another error."""
    display = display or str(fleet_path)
    try:
        return _parse_fleet(text, fleet_path, display, state_dir_override)
    except FleetError:
        raise
    except Exception as exc:  # a value no check foresaw is still the file's fault
        message = f"cannot use this fleet file: {type(exc).__name__}: {exc}"
        raise FleetError([Problem(display, None, None, "(file)", message)]) from exc


def _parse_fleet(
    text: str, fleet_path: Path, display: str, state_dir_override: str | None
) -> Fleet:
    try:
        located = load_located(text)
    except YamlSyntaxError as exc:
        raise FleetError([Problem(display, exc.line, None, "(file)", exc.message)]) from exc
    errors = _Collector(display, located)
    for dup_path, first, again in located.duplicates:
        agent = dup_path[1] if len(dup_path) == 2 and dup_path[0] == "agents" else None
        what = f"agent {dup_path[-1]!r}" if agent else f"key {dup_path[-1]!r}"
        errors.problems.append(
            Problem(
                display,
                again,
                agent,
                ".".join(map(str, dup_path)),
                f"{what} is written twice (lines {first} and {again});"
                " YAML would silently keep only the last",
            )
        )
    doc = located.value
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        errors.add((), f"the fleet file must be a mapping, got {_kind(doc)}")
        raise FleetError(errors.problems)
    for key in doc:
        if key not in TOP_KEYS:
            errors.unknown((), key, list(TOP_KEYS))

    base_dir = fleet_path.resolve().parent
    server = _parse_server(doc.get("server", "embedded"), errors)
    state_dir = _parse_state_dir(doc.get("state_dir"), state_dir_override, base_dir, errors)
    supervisor = _parse_supervisor(doc.get("supervisor", {}), base_dir, errors)
    restart = _parse_restart(doc.get("restart", {}), errors)
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        errors.add(("defaults",), f"expected a mapping of agent settings, got {_kind(defaults)}")
        defaults = {}
    _check_settings(defaults, ("defaults",), None, errors)
    agents = _parse_agents(doc.get("agents"), defaults, state_dir, errors)
    metrics = _parse_metrics(doc.get("metrics"), defaults, agents, server, errors)
    if errors.problems:
        raise FleetError(errors.problems)
    return Fleet(fleet_path, server, state_dir, supervisor, restart, agents, metrics)


def _parse_server(value: Any, errors: _Collector) -> ServerSettings:
    fallback = ServerSettings(f"http://{DEFAULT_EMBEDDED_HOST}:{DEFAULT_EMBEDDED_PORT}", True)
    if value == "embedded":
        return fallback
    if isinstance(value, dict):
        known = ["embedded", "host", "port", "agent_tokens"]
        for key in value:
            if key not in known:
                errors.unknown(("server",), key, known)
        if value.get("embedded") is not True:
            errors.add(
                ("server", "embedded"),
                "a server mapping needs `embedded: true`"
                " (for a remote server write its URL as `server: http://...`)",
            )
        host = value.get("host", DEFAULT_EMBEDDED_HOST)
        port = value.get("port", DEFAULT_EMBEDDED_PORT)
        if not isinstance(host, str) or not host:
            errors.add(("server", "host"), f"expected a host name or address, got {_kind(host)}")
            host = DEFAULT_EMBEDDED_HOST
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            errors.add(("server", "port"), f"expected a port number 1-65535, got {port!r}")
            port = DEFAULT_EMBEDDED_PORT
        agent_tokens = value.get("agent_tokens", False)
        if not isinstance(agent_tokens, bool):
            errors.add(("server", "agent_tokens"), f"expected true or false, got {agent_tokens!r}")
            agent_tokens = False
        shown = f"[{host}]" if ":" in host else host
        return ServerSettings(f"http://{shown}:{port}", True, host, port, agent_tokens)
    if isinstance(value, str) and re.match(r"https?://[^/\s]+", value):
        return ServerSettings(value.rstrip("/"), False)
    errors.add(("server",), f"expected `embedded` or an http(s):// URL, got {value!r}")
    return fallback


def _parse_state_dir(value: Any, override: str | None, base: Path, errors: _Collector) -> Path:
    if override:
        return Path(override).expanduser().resolve()
    if value is None:
        return base / ".tf-fleet"
    if not isinstance(value, str) or not value or _has_control(value):
        errors.add(("state_dir",), f"expected a directory path, got {value!r}")
        return base / ".tf-fleet"
    try:
        return (base / Path(value).expanduser()).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        errors.add(("state_dir",), f"cannot use {value!r} as a directory: {exc}")
        return base / ".tf-fleet"


def _parse_supervisor(value: Any, base: Path, errors: _Collector) -> SupervisorSettings:
    if not isinstance(value, dict):
        errors.add(("supervisor",), f"expected a mapping, got {_kind(value)}")
        return SupervisorSettings()
    for key in value:
        if key not in ("mode", "config"):
            errors.unknown(("supervisor",), key, ["mode", "config"])
    mode = value.get("mode", "private")
    if mode not in ("private", "system"):
        errors.add(("supervisor", "mode"), f"expected `private` or `system`, got {mode!r}")
        mode = "private"
    config = value.get("config")
    if config is not None and (not isinstance(config, str) or not config or _has_control(config)):
        errors.add(("supervisor", "config"), f"expected a file path, got {config!r}")
        config = None
    if mode == "system":
        config = str((base / (config or "/etc/supervisor/supervisord.conf")).resolve())
    elif config is not None:
        errors.add(("supervisor", "config"), "only used with `mode: system`")
    return SupervisorSettings(mode, config)


def _parse_restart(value: Any, errors: _Collector) -> RestartSettings:
    if not isinstance(value, dict):
        errors.add(("restart",), f"expected a mapping, got {_kind(value)}")
        return RestartSettings()
    known = ["method", "restart_dir", "timeout"]
    for key in value:
        if key not in known:
            errors.unknown(("restart",), key, known)
    method = value.get("method", "signal")
    if method not in ("signal", "file"):
        errors.add(("restart", "method"), f"expected `signal` or `file`, got {method!r}")
        method = "signal"
    restart_dir = value.get("restart_dir", "/tmp")
    if (
        not isinstance(restart_dir, str)
        or not restart_dir.startswith("/")
        or _has_control(restart_dir)
    ):
        errors.add(("restart", "restart_dir"), f"expected an absolute path, got {restart_dir!r}")
        restart_dir = "/tmp"
    try:
        timeout = parse_duration(value.get("timeout", DEFAULT_RESTART_TIMEOUT))
        if not timeout:
            raise ValueError(f"a timeout must be longer than 0, got {value.get('timeout')!r}")
    except ValueError as exc:
        errors.add(("restart", "timeout"), str(exc))
        timeout = DEFAULT_RESTART_TIMEOUT
    return RestartSettings(method, restart_dir, timeout)


def _parse_metrics(
    value: Any,
    defaults: dict[str, Any],
    agents: dict[str, Agent],
    server: ServerSettings,
    errors: _Collector,
) -> MetricsSettings | None:
    """Each tf-agent's metrics port: its own `metrics_port:`, else base_port plus its
    index among the fleet's tf-agents in name order (a pinned agent keeps its slot
    unused, so pinning one moves no other)."""
    if "metrics_port" in defaults:
        errors.add(
            ("defaults", "metrics_port"),
            "a metrics port belongs to one agent: set it under that agent"
            " (the others get `metrics.base_port` plus their index)",
        )
        return None  # every agent inherited it: one error, not one per agent
    if value is None:
        for name, agent in agents.items():
            if agent.metrics_port is not None:
                errors.add(
                    ("agents", name, "metrics_port"),
                    "needs `metrics:` at the top level (e.g. `metrics: {base_port: 9400}`)",
                    name,
                )
        return None
    settings = _metrics_settings(value, errors)
    if settings is None:
        return None
    ports = _metrics_ports(settings, agents, errors)
    _check_metrics_ports(ports, agents, server, errors)
    return MetricsSettings(settings.base_port, settings.host, ports)


def _metrics_settings(value: Any, errors: _Collector) -> MetricsSettings | None:
    if not isinstance(value, dict):
        errors.add(
            ("metrics",), f"expected a mapping such as {{base_port: 9400}}, got {_kind(value)}"
        )
        return None
    known = ["base_port", "host"]
    for key in value:
        if key not in known:
            errors.unknown(("metrics",), key, known)
    base_port = value.get("base_port")
    if base_port is None:
        errors.add(("metrics", "base_port"), "required: the first tf-agent's metrics port")
        return None
    message = _is_port(base_port)
    if message:
        errors.add(("metrics", "base_port"), message)
        return None
    host = value.get("host", DEFAULT_METRICS_HOST)
    if not isinstance(host, str) or not _is_host(host):
        errors.add(("metrics", "host"), f"expected a host name or IP address, got {host!r}")
        return None
    return MetricsSettings(base_port, host)


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return len(text) <= 253 and bool(HOST_NAME_RE.fullmatch(text))


def _metrics_ports(
    settings: MetricsSettings, agents: dict[str, Agent], errors: _Collector
) -> dict[str, int]:
    ports: dict[str, int] = {}
    tf_agents = sorted(name for name, agent in agents.items() if agent.is_tf_agent)
    last = settings.base_port + len(tf_agents) - 1
    if tf_agents and last > 65535:
        errors.add(
            ("metrics", "base_port"),
            f"{len(tf_agents)} tf-agents from port {settings.base_port} run past 65535"
            f" (to {last}); choose a base_port of at most {65536 - len(tf_agents)}",
        )
        return {}
    for index, name in enumerate(tf_agents):
        ports[name] = agents[name].metrics_port or settings.base_port + index
    for name, agent in sorted(agents.items()):
        if agent.metrics_port is not None and not agent.is_tf_agent:
            errors.add(
                ("agents", name, "metrics_port"),
                "only tf-agent is given a metrics port (its agent_command runs another agent)",
                name,
            )
    return ports


def _check_metrics_ports(
    ports: dict[str, int], agents: dict[str, Agent], server: ServerSettings, errors: _Collector
) -> None:
    """No two agents on one port, and none on the embedded server's; a pinned port that
    clashes is the one blamed (the slots of base_port + index come first)."""
    owner: dict[int, str] = {}
    if server.embedded:
        owner[server.port] = "the embedded server (`server.port`)"
    pinned_last = sorted(ports, key=lambda n: (agents[n].metrics_port is not None, n))
    for name in pinned_last:
        port = ports[name]
        if port not in owner:
            owner[port] = f"agent {name!r}"
            continue
        if agents[name].metrics_port is not None:
            path: tuple[str, ...] = ("agents", name, "metrics_port")
            hint = "pin another port"
        else:
            path = ("metrics", "base_port")
            hint = "choose another base_port"
        errors.add(path, f"port {port} is already taken by {owner[port]}: {hint}", name)


def _check_settings(
    settings: dict[Any, Any], path: tuple[Any, ...], agent: str | None, errors: _Collector
) -> None:
    for key, value in settings.items():
        if key in DERIVED_KEYS:
            errors.add(
                path + (key,),
                "is derived by tf-fleet (agent_id is the agent's name,"
                " server_address comes from `server`); remove it",
                agent,
            )
        elif key not in AGENT_KEYS:
            errors.unknown(path, key, sorted(AGENT_KEYS), agent)
        else:
            message = AGENT_KEYS[key](value)
            if message:
                errors.add(path + (key,), message, agent)


def _parse_agents(
    value: Any, defaults: dict[str, Any], state_dir: Path, errors: _Collector
) -> dict[str, Agent]:
    if value is None:
        errors.add(("agents",), "the fleet has no agents: add `agents:` with one entry per device")
        return {}
    if not isinstance(value, dict):
        errors.add(("agents",), f"expected a mapping of agent name to settings, got {_kind(value)}")
        return {}
    agents: dict[str, Agent] = {}
    for name, own in value.items():
        path = ("agents", name)
        if not isinstance(name, str) or not AGENT_NAME_RE.fullmatch(name):
            errors.add(path, AGENT_NAME_RULE, str(name))
            continue
        if name_keys(name) & name_keys(SERVER_PROGRAM):
            errors.add(path, f"{name!r} is reserved for the embedded server", name)
            continue
        if own is None:
            own = {}
        if not isinstance(own, dict):
            errors.add(path, f"expected a mapping of settings, got {_kind(own)}", name)
            continue
        before = len(errors.problems)
        _check_settings(own, path, name, errors)
        merged = _overlay(defaults, own)
        if "job_queues" not in merged:
            errors.add(
                path + ("job_queues",), "required: the queues this agent takes jobs from", name
            )
        if len(errors.problems) > before:
            continue
        agent_dir = state_dir / "agents" / name
        merged = _expand(merged, {"{agent}": name, "{agent_dir}": str(agent_dir)})
        agents[name] = _build_agent(name, merged, agent_dir)
    _check_collisions([n for n in value if isinstance(n, str)], errors)
    return agents


def name_keys(name: str) -> set[str]:
    """What an agent's name claims on the host, compared case-insensitively: its program,
    files and directories (the name), and the restart files tf-agent obeys (the name,
    and the name without dashes)."""
    lowered = name.lower()
    return {lowered, lowered.replace("-", "")}


def _check_collisions(names: list[str], errors: _Collector) -> None:
    """Two agents whose names claim the same program, restart file or directory."""
    owner: dict[str, str] = {}
    for name in names:
        if not AGENT_NAME_RE.fullmatch(name):
            continue
        clash = sorted({owner[k] for k in name_keys(name) if k in owner})
        for other in clash:
            errors.add(("agents", name), _collision(name, other), name)
        for key in name_keys(name):
            owner.setdefault(key, name)


def _collision(name: str, other: str) -> str:
    if name.lower() == other.lower():
        return (
            f"differs from agent {other!r} only by case: the two would share a supervisord"
            " program and directories on a case-insensitive view; rename one"
        )
    shared = (name_keys(name) & name_keys(other)).pop()
    return (
        f"collides with agent {other!r}: both would obey the restart file"
        f" {RESTART_FILE_PREFIX}{shared} (tf-agent also obeys its name without '-'); rename one"
    )


def _overlay(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in own.items():
        if key in MERGED_KEYS and isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _expand(value: Any, tokens: dict[str, str]) -> Any:
    if isinstance(value, str):
        for token, replacement in tokens.items():
            value = value.replace(token, replacement)
        return value
    if isinstance(value, list):
        return [_expand(v, tokens) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, tokens) for k, v in value.items()}
    return value


def _build_agent(name: str, merged: dict[str, Any], agent_dir: Path) -> Agent:
    upstream = {k: v for k, v in merged.items() if k in UPSTREAM_KEYS}
    # Upstream's defaults are shared /tmp/testflinger paths; two agents sharing a
    # results dir would re-send each other's results, so each gets its own.
    for key, sub in (
        ("execution_basedir", "run"),
        ("logging_basedir", "logs"),
        ("results_basedir", "results"),
    ):
        upstream.setdefault(key, str(agent_dir / sub))
    environment = {k: _env_text(v) for k, v in (merged.get("environment") or {}).items()}
    return Agent(
        name=name,
        upstream=upstream,
        agent_command=merged.get("agent_command", "tf-agent"),
        environment=environment,
        user=merged.get("user"),
        stopwaitsecs=merged.get("stopwaitsecs", 30),
        startsecs=merged.get("startsecs", 2),
        device=merged.get("device"),
        token_file=merged.get("token_file"),
        metrics_port=merged.get("metrics_port"),
    )


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
