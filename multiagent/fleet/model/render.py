"""Fleet -> the text of every file tf-fleet writes. Nothing here touches the disk."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from multiagent import jsonio
from multiagent.agent.config import UPSTREAM_KEYS as UPSTREAM_ORDER
from multiagent.fleet.model.fleetfile import DEFAULT_METRICS_HOST, TF_AGENT_SCRIPT, Agent, Fleet
from multiagent.fleet.model.layout import MARKER, Layout
from multiagent.fleet.model.templating import environment as template_environment
from multiagent.vocabulary import STOPWAITSECS_ENV

# supervisord starts low priorities first and stops them last: the server outlives agents.
SERVER_PRIORITY = 100
AGENT_PRIORITY = 999
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class RenderContext:
    """Host facts that rendering needs but must not look up itself."""

    python: str  # the interpreter that runs tf-agent and the embedded server
    program_dir: Path  # where [program:x] files go (the private conf.d or the system include dir)
    program_suffix: str = ".conf"
    # tf-agent's start-up script as installed, run without site (see agent/boot.py)
    agent_script: str = str(Path(__file__).resolve().parents[2] / "agent" / "boot.py")
    # What an upstream agent's program runs first, without site (see host/gate.py)
    gate_script: str = str(Path(__file__).resolve().parents[1] / "host" / "gate.py")


@dataclass(frozen=True)
class Program:
    """One supervisord program and every file that belongs to it."""

    name: str
    program_path: Path
    program_text: str
    # Files the process reads at start (agent config, device config); a change to them
    # needs a restart of the process but not a new program entry.
    config_files: dict[Path, str] = field(default_factory=dict)

    @property
    def files(self) -> dict[Path, str]:
        return {self.program_path: self.program_text, **self.config_files}


@dataclass(frozen=True)
class Rendering:
    supervisord_conf: tuple[Path, str] | None  # None in system mode
    programs: dict[str, Program]

    def all_files(self) -> dict[Path, str]:
        files: dict[Path, str] = {}
        if self.supervisord_conf:
            files[self.supervisord_conf[0]] = self.supervisord_conf[1]
        for program in self.programs.values():
            files.update(program.files)
        return files


def render(fleet: Fleet, ctx: RenderContext) -> Rendering:
    layout = Layout(fleet.state_dir)
    programs = {
        name: _render_agent(fleet, agent, layout, ctx)
        for name, agent in sorted(fleet.agents.items())
    }
    if fleet.server.embedded:
        programs[fleet.server_program] = _render_server(fleet, layout, ctx)
    conf = None
    if fleet.supervisor.mode == "private":
        conf = (layout.supervisord_conf, _render_supervisord(fleet, layout, ctx))
    return Rendering(conf, programs)


def agent_conf_text(fleet: Fleet, agent: Agent) -> str:
    """The upstream testflinger-agent.conf: only upstream keys, so either agent accepts it."""
    # Keys in upstream's order and nested mappings sorted, whatever order the fleet file
    # used: the same settings must give the same text, or `up` would restart the agent.
    ordered = {k: _sorted(agent.upstream[k]) for k in UPSTREAM_ORDER if k in agent.upstream}
    conf = {"agent_id": agent.name, "server_address": fleet.server.url, **ordered}
    header = f"# {MARKER}: edit the fleet file, not this file.\n"
    return header + _json_as_yaml(conf)


def _json_as_yaml(data: dict[str, Any]) -> str:
    """JSON, which YAML parsers (upstream's agent) read as the same mapping, and which
    tf-agent reads without importing a YAML parser. Block YAML if a float would print in
    exponent form (`1e-05`), which YAML 1.1 reads as a string."""
    if any(_exponent_float(v) for v in data.values()):
        return _yaml(data)
    return jsonio.formatted(data, indent=2) + "\n"


def _exponent_float(value: Any) -> bool:
    if isinstance(value, float):
        text = jsonio.dumps(value)
        return "e" in text or not any(c.isdigit() for c in text)
    if isinstance(value, dict):
        return any(_exponent_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_exponent_float(v) for v in value)
    return False


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value, key=str)}
    return value


def _yaml(data: Any) -> str:
    # libyaml's emitter writes the same text as the pure-Python one, several times faster
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, sort_keys=False, default_flow_style=False)


def token_file(fleet: Fleet, agent: Agent) -> str | None:
    """The credential the agent is given with --token-file: its own `token_file`, else the
    one the embedded server mints for it with `agent_tokens: true`."""
    if agent.token_file:
        return agent.token_file
    if fleet.server.embedded and fleet.server.agent_tokens:
        return str(Layout(fleet.state_dir).agent_token(agent.name))
    return None


def token_files(fleet: Fleet) -> dict[str, str]:
    """Each agent's credential file, where it has one."""
    found = {name: token_file(fleet, agent) for name, agent in fleet.agents.items()}
    return {name: path for name, path in found.items() if path}


def agent_command(agent: Agent, layout: Layout, fleet: Fleet, ctx: RenderContext) -> list[str]:
    conf = str(layout.agent_conf(agent.name))
    credential = token_file(fleet, agent)
    token = ["--token-file", credential] if credential else []
    if agent.is_tf_agent:
        words = agent.agent_command.split()
        # The plain name runs the interpreter tf-fleet was installed with, so the
        # program works whatever PATH supervisord has.
        base = [ctx.python, "-S", ctx.agent_script] if words == [TF_AGENT_SCRIPT] else words
        return [
            *base,
            "-c",
            conf,
            "--run-dir",
            str(layout.agent_run_dir(agent.name)),
            "--restart-dir",
            fleet.restart.restart_dir,
            *token,
            *metrics_options(fleet, agent.name),
        ]
    # Upstream's agent knows no drain flag and undoes a drain at each start: its program
    # goes through the gate, which holds it while the flag is there (host/gate.py).
    gate = [ctx.python, "-S", ctx.gate_script, "--drain-file", str(layout.drain_file(agent.name))]
    return [*gate, "--", *shlex.split(agent.agent_command), "-c", conf, *token]


def metrics_options(fleet: Fleet, name: str) -> list[str]:
    """`-p PORT` (and `--metrics-host` unless 127.0.0.1) for a tf-agent with a metrics port."""
    metrics = fleet.metrics
    if metrics is None or name not in metrics.ports:
        return []
    host = [] if metrics.host == DEFAULT_METRICS_HOST else ["--metrics-host", metrics.host]
    return ["-p", str(metrics.ports[name]), *host]


def _render_agent(fleet: Fleet, agent: Agent, layout: Layout, ctx: RenderContext) -> Program:
    config_files = {layout.agent_conf(agent.name): agent_conf_text(fleet, agent)}
    if agent.device is not None:
        config_files[layout.device_conf(agent.name)] = (
            f"# {MARKER}: the device connector config of {agent.name}\n" + _yaml(agent.device)
        )
    text = _program_text(
        fleet,
        ctx,
        name=agent.name,
        command=agent_command(agent, layout, fleet, ctx),
        directory=layout.agent_dir(agent.name),
        startsecs=agent.startsecs,
        stopwaitsecs=agent.stopwaitsecs,
        user=agent.user,
        environment=_with_path(_with_stopwait(agent), ctx),
        log_file=layout.log_file(agent.name),
        priority=AGENT_PRIORITY,
    )
    return Program(agent.name, _program_path(agent.name, ctx), text, config_files)


def _with_stopwait(agent: Agent) -> dict[str, str]:
    """A tf-agent learns how long supervisord waits after its SIGTERM: its cleanup fits."""
    if not agent.is_tf_agent:
        return agent.environment
    return {**agent.environment, STOPWAITSECS_ENV: str(agent.stopwaitsecs)}


def _render_server(fleet: Fleet, layout: Layout, ctx: RenderContext) -> Program:
    command = [
        ctx.python,
        "-m",
        "multiagent.server",
        "--host",
        fleet.server.host,
        "--port",
        str(fleet.server.port),
        "--db",
        str(layout.server_db),
    ]
    text = _program_text(
        fleet,
        ctx,
        name=fleet.server_program,
        command=command,
        directory=layout.state_dir,
        startsecs=1,
        stopwaitsecs=10,
        user=None,
        environment={},
        log_file=layout.log_file(fleet.server_program),
        priority=SERVER_PRIORITY,
    )
    name = fleet.server_program
    return Program(name, _program_path(name, ctx), text)


def _with_path(environment: dict[str, str], ctx: RenderContext) -> dict[str, str]:
    """Put the interpreter's bin dir first on PATH, so tf-local-connector and other
    console scripts of this install are found whatever PATH supervisord was started with."""
    if "PATH" in environment:
        return environment
    bin_dir = str(Path(ctx.python).parent)
    return {**environment, "PATH": f"{bin_dir}:{SYSTEM_PATH}"}


def _program_path(name: str, ctx: RenderContext) -> Path:
    return ctx.program_dir / f"{name}{ctx.program_suffix}"


def _environment_value(environment: dict[str, str]) -> str:
    def quote(text: str) -> str:
        return f"'{text}'" if '"' in text else f'"{text}"'

    return ",".join(f"{key}={quote(value)}" for key, value in sorted(environment.items()))


def _program_text(
    fleet: Fleet,
    ctx: RenderContext,
    *,
    name: str,
    command: list[str],
    directory: Path,
    startsecs: int,
    stopwaitsecs: int,
    user: str | None,
    environment: dict[str, str],
    log_file: Path,
    priority: int,
) -> str:
    template = template_environment().get_template("program.conf.j2")
    return template.render(
        marker=f"{MARKER} ({fleet.identity})",
        name=name,
        command=shlex.join(command),
        directory=directory,
        startsecs=startsecs,
        stopwaitsecs=stopwaitsecs,
        user=user,
        environment=_environment_value(environment) if environment else "",
        log_file=log_file,
        priority=priority,
    )


def _render_supervisord(fleet: Fleet, layout: Layout, ctx: RenderContext) -> str:
    template = template_environment().get_template("supervisord.conf.j2")
    return template.render(
        marker=f"{MARKER} ({fleet.identity})",
        socket=layout.socket,
        log_file=layout.supervisord_log,
        pid_file=layout.pid_file,
        child_log_dir=layout.logs_dir,
        state_dir=fleet.state_dir,
        program_glob=f"{ctx.program_dir}/*{ctx.program_suffix}",
    )
