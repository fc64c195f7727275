"""tf-agent command line (argparse: click costs start-up time and memory)."""

from __future__ import annotations

import os
import sys

from multiagent.agent import __version__
from multiagent.agent.log import get as get_logger
from multiagent.vocabulary import DEFAULT_RESTART_DIR, AgentExit, AgentState, DrainMode

TYPE_CHECKING = False  # no typing import at run time (start-up cost)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from multiagent.agent.config import AgentConfig
    from multiagent.agent.status import NameGuard


# option -> dest, for the fast path of parse_args
_OPTIONS = {
    "-c": "config",
    "--config": "config",
    "-p": "metrics_port",
    "--metrics_port": "metrics_port",
    "--metrics-port": "metrics_port",
    "--metrics-host": "metrics_host",
    "--token-file": "token_file",
    "--token_file": "token_file",
    "--run-dir": "run_dir",
    "--restart-dir": "restart_dir",
}


class Args:
    """The parsed command line (a plain class: argparse's Namespace is not typed)."""

    __slots__ = ("config", "metrics_port", "metrics_host", "token_file", "run_dir", "restart_dir")

    def __init__(
        self,
        config: str = "testflinger-agent.conf",
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        token_file: str | None = None,
        run_dir: str | None = None,
        restart_dir: str = DEFAULT_RESTART_DIR,
    ):
        self.config = config
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.token_file = token_file
        self.run_dir = run_dir
        self.restart_dir = restart_dir


def parse_args(argv: list[str] | None) -> Args:
    """The plain `--opt value` / `--opt=value` command lines without argparse.

    argparse brings gettext, locale and shutil (bz2, lzma): ~8 ms of every start.
    Anything else (--help, --version, abbreviations, errors) goes to argparse, so
    its behaviour and messages are unchanged.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    parsed = Args()
    i = 0
    while i < len(args):
        opt, value = args[i], None
        if opt.startswith("--") and "=" in opt:
            opt, value = opt.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("-"):
            value = args[i + 1]
            i += 2
        dest = _OPTIONS.get(opt)
        if dest is None or value is None:
            return _parse_args_argparse(argv)
        if dest == "metrics_port":
            try:
                parsed.metrics_port = int(value)
            except ValueError:
                return _parse_args_argparse(argv)
        else:
            setattr(parsed, dest, value)
    return parsed


def _parse_args_argparse(argv: list[str] | None) -> Args:
    import argparse

    parser = argparse.ArgumentParser(
        prog="tf-agent", description="Testflinger device agent with safe restarts."
    )
    parser.add_argument(
        "-c",
        "--config",
        default="testflinger-agent.conf",
        help="agent config (upstream YAML format)",
    )
    parser.add_argument(
        "-p",
        "--metrics_port",
        "--metrics-port",
        dest="metrics_port",
        type=int,
        help="serve Prometheus metrics on PORT (at --metrics-host)",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="the address /metrics is served on (default 127.0.0.1)",
    )
    parser.add_argument(
        "--token-file",
        "--token_file",
        dest="token_file",
        help='JSON {"refresh_token": ...} for the server\'s OAuth2 refresh flow',
    )
    parser.add_argument(
        "--run-dir", help="status file, drain flag and lock (default: the config file's directory)"
    )
    parser.add_argument(
        "--restart-dir",
        default=DEFAULT_RESTART_DIR,
        help="where TESTFLINGER-DEVICE-RESTART-<agent> is looked for",
    )
    parser.add_argument("--version", action="version", version=f"tf-agent {__version__}")
    return Args(**vars(parser.parse_args(argv)))


def setup_logging(cfg: AgentConfig) -> None:
    from multiagent.agent import log

    writers: list[Callable[[str, float], None]] = [] if cfg.logging_quiet else [log.console]
    try:
        from multiagent.agent.logfile import DailyLogFile

        os.makedirs(cfg.logging_basedir, exist_ok=True)
        writers.append(
            DailyLogFile(os.path.join(cfg.logging_basedir, "testflinger-agent.log")).write
        )
        failed = None
    except OSError as exc:
        failed = exc
    log.configure(log.level_named(cfg.logging_level), writers)
    if failed is not None:
        log.get("tf-agent").warning("no log file in %s: %s", cfg.logging_basedir, failed)


def fail(message: str, code: int) -> int:
    print(f"tf-agent: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    from multiagent.agent.config import ConfigError, load
    from multiagent.agent.status import NameGuard, NameTaken

    args = parse_args(argv)
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        return fail(str(exc), AgentExit.BAD_CONFIG)
    agent_id = cfg.agent_id
    # First of all, before any file or server is touched: one process per agent name.
    guard = NameGuard(
        agent_id, cfg.server_address, own_dir=os.path.dirname(os.path.abspath(args.config))
    )
    try:
        guard.acquire()
    except NameTaken as exc:
        who = f"pid {exc.pid}" if exc.pid else "another process"
        if exc.uid is not None and exc.uid != os.getuid():
            who += f" (uid {exc.uid})"
        return fail(
            f"agent {agent_id!r} is already running: {who} holds the name", AgentExit.NAME_TAKEN
        )
    try:
        return _run(args, cfg, guard)
    finally:
        guard.release()  # its lock file goes; a kill leaves it for the next start to reuse


def _run(args: Args, cfg: AgentConfig, guard: NameGuard) -> int:
    from multiagent.agent.status import DrainFlag, StatusFile
    from multiagent.agent.triggers import Triggers

    agent_id = cfg.agent_id
    # Handlers go in first: SIGUSR1's default action would kill the process.
    triggers = Triggers(agent_id, args.restart_dir)
    triggers.install()

    run_dir = args.run_dir or os.path.dirname(os.path.abspath(args.config))
    for key, path in (
        ("--run-dir", run_dir),
        ("execution_basedir", cfg.execution_basedir),
        ("results_basedir", cfg.results_basedir),
    ):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            return fail(
                f"{args.config}: key {key!r}: cannot create {path}: {exc.strerror}",
                AgentExit.BAD_CONFIG,
            )

    setup_logging(cfg)
    log = get_logger("tf-agent")
    if guard.where == "socket":
        log.warning(
            "this user has no private directory to hold the name %r in (no home of its "
            "own, config dir not private): it is guarded by an abstract socket",
            agent_id,
        )
    elif guard.where == "unguarded":
        log.warning(
            "uid %s holds the abstract socket of the name %r: ignored, since another user "
            "may not keep this agent from starting; this agent runs without a name guard",
            guard.squatter,
            agent_id,
        )
    # Temp files in the agent's own (config) dir: see StatusFile.
    status = StatusFile(run_dir, agent_id, tmp_dir=os.path.dirname(os.path.abspath(args.config)))
    drain = DrainFlag(run_dir, agent_id)
    if drain.read() == DrainMode.HOLD:
        log.info("drain flag %s says hold: not starting", drain.path)
        status.update(state=AgentState.STOPPED, drained=True)
        return AgentExit.STOPPED

    from multiagent.agent.loop import Agent
    from multiagent.agent.metrics import Metrics

    metrics = Metrics(agent_id)
    if args.metrics_port:
        try:
            metrics.serve(args.metrics_port, args.metrics_host)
        except OSError as exc:
            where = f"{args.metrics_host}:{args.metrics_port}"
            return fail(f"cannot serve metrics on {where}: {exc}", AgentExit.BAD_CONFIG)
    log.info("tf-agent %s starting as %s (pid %s)", __version__, agent_id, os.getpid())
    agent = Agent(cfg, status, drain, triggers, metrics, token_file=args.token_file)
    try:
        code = agent.run()
    except Exception:
        log.exception("tf-agent crashed")
        status.update(state=AgentState.STOPPED)
        return AgentExit.INTERNAL_ERROR
    log.info("exiting with status %s", code)
    return code


def run() -> NoReturn:
    """The `tf-agent` command: main(), then exit without the interpreter's teardown."""
    code = main()
    from multiagent.fastexit import leave

    leave(code)


if __name__ == "__main__":
    run()
