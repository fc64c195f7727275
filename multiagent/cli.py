"""tf-fleet's command line: parse, call, print. The work happens in the modules it calls."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from .fleet import FleetError, load_fleet
from .supervisor import SupervisorError

EXIT_INVALID = 2


class Options:
    def __init__(self, config: str, state_dir: str | None):
        self.config = config
        self.state_dir = state_dir

    def context(self):
        from .reconcile import Context

        return Context.load(load_fleet(self.config, self.state_dir))


def handles_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our errors into a clear message and an exit status, without a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FleetError as exc:
            for problem in exc.problems:
                click.echo(f"error: {problem}", err=True)
            count = len(exc.problems)
            click.echo(f"{count} problem{'s' if count != 1 else ''}; nothing was changed.",
                       err=True)
            sys.exit(EXIT_INVALID)
        except SupervisorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", default=lambda: os.environ.get("TF_FLEET_CONFIG", "fleet.yaml"),
              show_default="./fleet.yaml or $TF_FLEET_CONFIG", help="The fleet file.")
@click.option("--state-dir", default=None,
              help="Where tf-fleet writes everything (overrides the fleet file's state_dir).")
@click.version_option(package_name="tf-fleet")
@click.pass_context
def main(click_ctx: click.Context, config: str, state_dir: str | None) -> None:
    """Run a host's Testflinger device agents under supervisord."""
    click_ctx.obj = Options(config, state_dir)


pass_options = click.make_pass_decorator(Options)


@main.command()
@pass_options
@handles_errors
def validate(opts: Options) -> None:
    """Check the fleet file; report every problem with file, line, agent and field."""
    fleet = load_fleet(opts.config, opts.state_dir)
    click.echo(f"{opts.config}: {len(fleet.agents)} agent(s), valid.")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@pass_options
@handles_errors
def plan(opts: Options, as_json: bool) -> None:
    """Show what `up` would do, per agent, without doing it."""
    from .reconcile import make_plan

    result = make_plan(opts.context())
    if as_json:
        click.echo(json.dumps({"actions": [{"name": a.name, "action": a.kind,
                                            "reasons": list(a.reasons)}
                                           for a in result.actions]}, indent=2))
        return
    for action in result.actions:
        reasons = f"  ({'; '.join(action.reasons)})" if action.reasons else ""
        click.echo(f"{action.kind:<10} {action.name}{reasons}")


@main.command()
@click.option("--no-wait", is_flag=True, help="Do not wait for started agents to settle.")
@click.option("--timeout", default=60.0, show_default=True,
              help="Seconds to wait for started agents to be running.")
@pass_options
@handles_errors
def up(opts: Options, no_wait: bool, timeout: float) -> None:
    """Render every agent, start supervisord if needed, start new agents."""
    from . import plan as planning
    from .reconcile import up as run_up

    ctx = opts.context()
    report = run_up(ctx, wait=not no_wait, timeout=timeout)
    if report.started_supervisord:
        click.echo(f"started supervisord (pid {report.started_supervisord},"
                   f" socket {ctx.target.socket_url})")
    for path in report.written:
        click.echo(f"wrote {path}")
    failed = []
    for name in report.started:
        state = report.states.get(name, "starting")
        click.echo(f"started {name}: {state}")
        if state in ("FATAL", "BACKOFF", "EXITED"):
            failed.append(name)
    for action in report.pending:
        what = {planning.RESTART: "needs a restart", planning.REPLACE: "needs a new program",
                planning.REMOVE: "is no longer in the fleet"}[action.kind]
        click.echo(f"{action.name} {what} ({'; '.join(action.reasons)}): left running;"
                   f" apply with a safe restart when it is idle")
    unchanged = len(report.plan.of_kind(planning.UNCHANGED))
    click.echo(f"{len(report.started)} started, {len(report.pending)} pending,"
               f" {unchanged} unchanged.")
    if failed:
        click.echo(f"failed to start: {', '.join(failed)} (see `tf-fleet status`)", err=True)
        sys.exit(1)


@main.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_options
@handles_errors
def status(opts: Options, names: tuple[str, ...], as_json: bool) -> None:
    """One line per agent: process, pid, uptime, state, job, restart, last poll."""
    from .status import fleet_status, format_table

    ctx = opts.context()
    wanted = list(names) or sorted(ctx.fleet.agents)
    unknown = [n for n in wanted if n not in ctx.fleet.agents]
    if unknown:
        raise click.BadParameter(f"not in {opts.config}: {', '.join(unknown)}",
                                 param_hint="NAME")
    processes = ctx.supervisor.processes() if ctx.supervisor.is_running() else {}
    rows = fleet_status(wanted, processes, ctx.layout)
    if as_json:
        click.echo(json.dumps({"agents": [r.to_json() for r in rows]}, indent=2))
    else:
        if not processes:
            click.echo(f"supervisord is not running ({ctx.target.socket_url})")
        click.echo(format_table(rows))
    if any(r.failed for r in rows):
        sys.exit(1)


@main.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", default=50, show_default=True, help="How many lines to show.")
@pass_options
@handles_errors
def logs(opts: Options, name: str, follow: bool, lines: int) -> None:
    """Print an agent's log (what it wrote to stdout and stderr)."""
    from .fleet import SERVER_PROGRAM
    from .status import tail_lines

    ctx = opts.context()
    if name not in ctx.fleet.agents and name != SERVER_PROGRAM:
        raise click.BadParameter(f"not in {opts.config}", param_hint="NAME")
    path = ctx.layout.log_file(name)
    if not path.exists():
        click.echo(f"{name} has no log yet ({path})", err=True)
        sys.exit(1)
    for line in tail_lines(path, lines, max_bytes=max(64 * 1024, lines * 512)):
        click.echo(line)
    if follow:
        _follow(path)


def _follow(path) -> None:
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        try:
            while True:
                chunk = handle.read()
                if chunk:
                    click.echo(chunk.decode("utf-8", "replace"), nl=False)
                else:
                    if path.stat().st_size < handle.tell():  # rotated
                        handle.seek(0)
                    time.sleep(0.25)
        except KeyboardInterrupt:
            pass


@main.command()
@pass_options
@handles_errors
def down(opts: Options) -> None:
    """Stop every agent and, in private mode, supervisord."""
    from .reconcile import down as run_down

    ctx = opts.context()
    stopped = run_down(ctx)
    click.echo(f"stopped {len(stopped)} program(s)" + (": " + ", ".join(stopped)
                                                        if stopped else ""))
    if ctx.target.mode == "private":
        click.echo("supervisord stopped")


def _register_optional_commands() -> None:
    """The local server's commands live with the server package."""
    try:
        from .server.cli import server_command, submit_command
    except ImportError:
        return
    main.add_command(server_command, "server")
    main.add_command(submit_command, "submit")


_register_optional_commands()
