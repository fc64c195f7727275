"""The fleet file: what it becomes (`Fleet` and its parts), and reading it.

`load_fleet` is pure apart from reading the one file: it returns a `Fleet` or raises
`FleetError` carrying every problem found, so an admin fixes them all in one go. What
each key may hold is `fleetschema`'s data; this module reads the file with it, names
each problem's file, line, agent and field, and checks what spans keys (agent names,
metrics ports).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from multiagent.fleet.errors import ExitStatus, UserError
from multiagent.fleet.messages import CONFIG_HINT
from multiagent.fleet.model import fleetschema
from multiagent.fleet.model.agentnames import SERVER_PROGRAM, check_collisions, check_name
from multiagent.fleet.model.fleetschema import (
    DEFAULT_CANARY_SOAK,
    DEFAULT_EMBEDDED_HOST,
    DEFAULT_EMBEDDED_PORT,
    DEFAULT_METRICS_HOST,
    DEFAULT_RESTART_TIMEOUT,
)
from multiagent.fleet.model.schema import Problem, Read, Report, kind_of, read_section, require
from multiagent.fleet.model.yamlsource import YamlSyntaxError, load_located
from multiagent.vocabulary import DEFAULT_RESTART_DIR

__all__ = [
    "DEFAULT_EMBEDDED_HOST",
    "DEFAULT_EMBEDDED_PORT",
    "DEFAULT_METRICS_HOST",
    "DEFAULT_RESTART_TIMEOUT",
    "Agent",
    "Fleet",
    "FleetError",
    "MetricsSettings",
    "Problem",
    "ProgramKind",
    "RestartSettings",
    "ServerSettings",
    "SupervisorSettings",
    "command_kind",
    "load_fleet",
    "parse_fleet",
]

# A fleet file larger than this is refused before it is parsed (a fleet of 2,000
# agents is a few hundred KB).
MAX_FLEET_BYTES = 2 * 1024 * 1024
# The console script of tf-agent, as a fleet file's `agent_command` names it.
TF_AGENT_SCRIPT = "tf-agent"


class ProgramKind:
    """What a supervisord program of a fleet runs; an operation, `status` and `down` treat
    each kind its own way (only tf-agent writes a status file)."""

    TF_AGENT: Final = "tf-agent"
    UPSTREAM: Final = "upstream"  # testflinger-agent, or any command taking -c CONF
    SERVER: Final = "server"  # the embedded local server


class FleetError(UserError):
    """The fleet file (or what the host makes of it) is invalid: every problem at once."""

    exit_status = ExitStatus.INVALID

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
    restart_dir: str = DEFAULT_RESTART_DIR
    timeout: float = DEFAULT_RESTART_TIMEOUT
    canary_soak: float = DEFAULT_CANARY_SOAK  # canaries watched this long before the rest


@dataclass(frozen=True)
class Agent:
    name: str
    upstream: dict[str, Any]  # only upstream testflinger-agent.conf keys, without derived ones
    agent_command: str = TF_AGENT_SCRIPT
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
        return self.kind == ProgramKind.TF_AGENT


def command_kind(words: list[str]) -> str:
    """TF_AGENT for a command that runs tf-agent (by its console script or as
    `python -m multiagent.agent`), else UPSTREAM: the one rule, for the fleet file's
    agent_command and for the command line of a program file alike."""
    if words and os.path.basename(words[0]) == TF_AGENT_SCRIPT:
        return ProgramKind.TF_AGENT
    if any(words[i : i + 2] == ["-m", "multiagent.agent"] for i in range(len(words) - 1)):
        return ProgramKind.TF_AGENT
    return ProgramKind.UPSTREAM


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
    name: str | None = None  # `name:`, the `fleet` label of its metrics
    duplicate_names: str = "warn"  # warn | refuse: an agent name heard from elsewhere

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


def load_fleet(path: str | os.PathLike[str], state_dir_override: str | None = None) -> Fleet:
    fleet_path = Path(path)
    display = str(path)
    try:
        with open(fleet_path, "rb") as handle:
            data = handle.read(MAX_FLEET_BYTES + 1)
    except OSError as exc:
        message = f"cannot read the fleet file: {exc.strerror}"
        if isinstance(exc, FileNotFoundError):
            message += f"; {CONFIG_HINT}"
        raise FleetError([Problem(display, None, None, "(file)", message)]) from exc
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
    report = Report(display, located)
    _report_duplicates(located.duplicates, report)
    doc = {} if located.value is None else located.value
    top = read_section(doc, fleetschema.TOP, (), report) if isinstance(doc, dict) else None
    if top is None:
        report.add((), f"the fleet file must be a mapping, got {kind_of(doc)}")
        raise FleetError(report.problems)
    values = top.values
    base_dir = fleet_path.resolve().parent
    server = _read_server(values["server"], report)
    state_dir = _read_state_dir(values["state_dir"], state_dir_override, base_dir, report)
    supervisor = _read_supervisor(values["supervisor"], base_dir, report)
    restart = _read_restart(values["restart"], report)
    defaults = _read_defaults(values["defaults"], report)
    agents = _read_agents(values["agents"], defaults, state_dir, report)
    metrics = _read_metrics(values["metrics"], agents, server, report)
    _check_restart_method(restart, agents, report)
    if report.problems:
        raise FleetError(report.problems)
    name, duplicates = values["name"], values["duplicate_names"]
    return Fleet(
        fleet_path, server, state_dir, supervisor, restart, agents, metrics, name, duplicates
    )


def _report_duplicates(duplicates: list[tuple[tuple[Any, ...], int, int]], report: Report) -> None:
    for path, first, again in duplicates:
        agent = path[1] if len(path) == 2 and path[0] == "agents" else None
        what = f"agent {path[-1]!r}" if agent else f"key {path[-1]!r}"
        message = (
            f"{what} is written twice (lines {first} and {again});"
            " YAML would silently keep only the last"
        )
        field_name = ".".join(map(str, path))
        report.problems.append(Problem(report.file, again, agent, field_name, message))


def _read_server(value: Any, report: Report) -> ServerSettings:
    """`embedded`, the URL of a remote server, or an embedded server's mapping."""
    fallback = ServerSettings(f"http://{DEFAULT_EMBEDDED_HOST}:{DEFAULT_EMBEDDED_PORT}", True)
    if value == "embedded":
        return fallback
    if isinstance(value, dict):
        read = read_section(value, fleetschema.EMBEDDED_SERVER, ("server",), report)
        assert read is not None  # given a mapping, read_section reads it
        host, port = read.values["host"], read.values["port"]
        shown = f"[{host}]" if ":" in host else host
        tokens = read.values["agent_tokens"]
        return ServerSettings(f"http://{shown}:{port}", True, host, port, tokens)
    if isinstance(value, str) and fleetschema.URL_RE.match(value):
        return ServerSettings(value.rstrip("/"), False)
    report.add(("server",), f"expected `embedded` or an http(s):// URL, got {value!r}")
    return fallback


def _read_state_dir(value: Any, override: str | None, base: Path, report: Report) -> Path:
    if override:
        return Path(override).expanduser().resolve()
    if value is None:  # absent, or refused by its rule
        return base / ".tf-fleet"
    try:
        return (base / Path(value).expanduser()).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        report.add(("state_dir",), f"cannot use {value!r} as a directory: {exc}")
        return base / ".tf-fleet"


def _read_supervisor(value: Any, base: Path, report: Report) -> SupervisorSettings:
    read = read_section(value, fleetschema.SUPERVISOR, ("supervisor",), report)
    if read is None:
        return SupervisorSettings()
    mode, config = read.values["mode"], read.values["config"]
    if mode == "system":
        config = str((base / (config or fleetschema.SYSTEM_SUPERVISOR_CONFIG)).resolve())
    elif config is not None:
        report.add(("supervisor", "config"), "only used with `mode: system`")
    return SupervisorSettings(mode, config)


def _read_restart(value: Any, report: Report) -> RestartSettings:
    read = read_section(value, fleetschema.RESTART, ("restart",), report)
    if read is None:
        return RestartSettings()
    return RestartSettings(**read.values)


def _check_restart_method(
    restart: RestartSettings, agents: dict[str, Agent], report: Report
) -> None:
    """The restart file only asks tf-agent: upstream's testflinger-agent stopped looking
    for it (it honours SIGUSR1 alone), so a safe restart by file would wait for ever."""
    if restart.method != "file":
        return
    for name, agent in agents.items():
        if agent.kind == ProgramKind.UPSTREAM:
            report.add(
                ("restart", "method"),
                f"`file` cannot restart agent {name!r}: its agent_command "
                f"({agent.agent_command}) is upstream's agent, which honours only SIGUSR1; "
                "use `method: signal`",
                name,
            )


def _read_defaults(value: Any, report: Report) -> Read:
    """Settings every agent starts from; a key written with a bad value is among the
    `invalid`, so that no agent is also told it misses it."""
    if value is None:  # absent, or `defaults:` with nothing under it
        return Read({}, frozenset())
    read = read_section(value, fleetschema.DEFAULT_SETTINGS, ("defaults",), report, fill=False)
    return Read({}, frozenset()) if read is None else read


def _read_agents(value: Any, defaults: Read, state_dir: Path, report: Report) -> dict[str, Agent]:
    if value is None:
        report.add(("agents",), "the fleet has no agents: add `agents:` with one entry per device")
        return {}
    if not isinstance(value, dict):
        report.add(
            ("agents",), f"expected a mapping of agent name to settings, got {kind_of(value)}"
        )
        return {}
    agents: dict[str, Agent] = {}
    agents_dir = str(state_dir / "agents")  # joined as text below: Path joins were ~10 % of a load
    for name, own in value.items():
        agent = _read_agent(name, own, defaults, agents_dir, report)
        if agent is not None:
            agents[name] = agent
    check_collisions([n for n in value if isinstance(n, str)], report)
    return agents


def _read_agent(
    name: Any, own: Any, defaults: Read, agents_dir: str, report: Report
) -> Agent | None:
    path = ("agents", name)
    if not check_name(name, report):
        return None
    before = len(report.problems)
    own = {} if own is None else own
    read = read_section(own, fleetschema.AGENT_SETTINGS, path, report, name, fill=False)
    if read is None:
        return None
    merged = _overlay(defaults.values, read.values)
    written = merged.keys() | own.keys() | defaults.invalid
    require(written, fleetschema.AGENT_SETTINGS, path, report, name)
    if len(report.problems) > before:
        return None
    agent_dir = f"{agents_dir}/{name}"
    merged = _expand(merged, {"{agent}": name, "{agent_dir}": agent_dir})
    return _build_agent(name, merged, agent_dir)


def _read_metrics(
    value: Any, agents: dict[str, Agent], server: ServerSettings, report: Report
) -> MetricsSettings | None:
    """Each tf-agent's metrics port: its own `metrics_port:`, else base_port plus its
    index among the fleet's tf-agents in name order (a pinned agent keeps its slot
    unused, so pinning one moves no other)."""
    if value is None:
        for name, agent in agents.items():
            if agent.metrics_port is not None:
                report.add(
                    ("agents", name, "metrics_port"),
                    "needs `metrics:` at the top level (e.g. `metrics: {base_port: 9400}`)",
                    name,
                )
        return None
    read = read_section(value, fleetschema.METRICS, ("metrics",), report)
    if read is None or read.invalid:
        return None
    settings = MetricsSettings(read.values["base_port"], read.values["host"])
    ports = _metrics_ports(settings, agents, report)
    _check_metrics_ports(ports, agents, server, report)
    return MetricsSettings(settings.base_port, settings.host, ports)


def _metrics_ports(
    settings: MetricsSettings, agents: dict[str, Agent], report: Report
) -> dict[str, int]:
    ports: dict[str, int] = {}
    tf_agents = sorted(name for name, agent in agents.items() if agent.is_tf_agent)
    last = settings.base_port + len(tf_agents) - 1
    if tf_agents and last > 65535:
        report.add(
            ("metrics", "base_port"),
            f"{len(tf_agents)} tf-agents from port {settings.base_port} run past 65535"
            f" (to {last}); choose a base_port of at most {65536 - len(tf_agents)}",
        )
        return {}
    for index, name in enumerate(tf_agents):
        ports[name] = agents[name].metrics_port or settings.base_port + index
    for name, agent in sorted(agents.items()):
        if agent.metrics_port is not None and not agent.is_tf_agent:
            report.add(
                ("agents", name, "metrics_port"),
                "only tf-agent is given a metrics port (its agent_command runs another agent)",
                name,
            )
    return ports


def _check_metrics_ports(
    ports: dict[str, int], agents: dict[str, Agent], server: ServerSettings, report: Report
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
        report.add(path, f"port {port} is already taken by {owner[port]}: {hint}", name)


def _overlay(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in own.items():
        if (
            key in fleetschema.MERGED_KEYS
            and isinstance(merged.get(key), dict)
            and isinstance(value, dict)
        ):
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


def _build_agent(name: str, merged: dict[str, Any], agent_dir: str) -> Agent:
    upstream = {k: v for k, v in merged.items() if k in fleetschema.UPSTREAM_KEYS}
    # Upstream's defaults are shared /tmp/testflinger paths; two agents sharing a
    # results dir would re-send each other's results, so each gets its own.
    for key, sub in (
        ("execution_basedir", "run"),
        ("logging_basedir", "logs"),
        ("results_basedir", "results"),
    ):
        upstream.setdefault(key, f"{agent_dir}/{sub}")
    # The fleet's own keys are Agent's fields: an absent one keeps Agent's default.
    fleet = {k.name: merged[k.name] for k in fleetschema.FLEET_KEYS if k.name in merged}
    environment = fleet.pop("environment", {})
    return Agent(
        name=name,
        upstream=upstream,
        environment={k: _env_text(v) for k, v in environment.items()},
        **fleet,
    )


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
