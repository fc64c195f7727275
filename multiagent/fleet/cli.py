"""tf-fleet's command line: parse, call, print. The work happens in the modules it calls."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from multiagent import __version__
from multiagent.fleet.errors import ExitStatus, UserError
from multiagent.fleet.messages import (
    SUMMARY_OVER,
    Lines,
    plural,
    unknown_agents,
    use_local_time,
)
from multiagent.fleet.model.fleetfile import ProgramKind, load_fleet
from multiagent.fleet.model.layout import Layout
from multiagent.vocabulary import parse_duration

if TYPE_CHECKING:
    from multiagent.fleet.commands.canary import CanaryGate
    from multiagent.fleet.commands.up import UpReport
    from multiagent.fleet.host.rejected import Rejection
    from multiagent.fleet.host.watchers import Watcher
    from multiagent.fleet.model.fleetfile import Fleet
    from multiagent.fleet.model.operations import Operation, RunResult
    from multiagent.fleet.model.render import Rendering
    from multiagent.fleet.reconcile.progress import Progress
    from multiagent.fleet.supervisord.client import Supervisor, SupervisorTarget

PLAN_KINDS = ("add", "start", "restart", "replace", "remove", "unchanged")


class Options:
    def __init__(self, config: str, state_dir: str | None, verbose: bool = False):
        self.config = config
        self.state_dir = state_dir
        self.verbose = verbose
        self.progress: Progress | None = None  # this command's progress lines, if any
        self.lock_wait = True  # --no-lock-wait: fail at once while another command changes

    def lines(self, as_json: bool = False) -> Lines:
        return Lines(verbose=self.verbose, quiet=as_json)

    def fleet(self) -> Fleet:
        return load_fleet(self.config, self.state_dir)


def _supervisor(fleet: Fleet, timeout: str | None = None) -> Supervisor:
    """The fleet's supervisord (its target read once: in system mode, from the host's
    supervisord.conf); no call to it waits past a few seconds, nor past `timeout` (the
    command's --timeout)."""
    from multiagent.fleet.supervisord.client import CALL_SECONDS, Supervisor, target_for

    return Supervisor(target_for(fleet), _duration(timeout) or CALL_SECONDS)


def handles_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """A known failure prints its lines and exits with its status; anything else is a bug:
    one line on the terminal, the traceback in a log file."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            for line in exc.lines():
                click.echo(line, err=True)
            sys.exit(exc.exit_status)
        except click.ClickException:
            raise
        except BrokenPipeError:
            _quiet_broken_pipe()
        except KeyboardInterrupt:
            click.echo(
                "interrupted: tf-fleet stopped waiting; no job was interrupted, and what was"
                " asked goes on by itself (`tf-fleet status` shows it)",
                err=True,
            )
            sys.exit(ExitStatus.INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - the last resort: never a traceback
            log = _write_traceback()
            click.echo(
                f"error: unexpected {type(exc).__name__}: {exc}; the traceback is in {log}",
                err=True,
            )
            sys.exit(ExitStatus.FAILED)

    return wrapper


def _quiet_broken_pipe() -> None:
    """The reader went away (`| head`): stop quietly, as `cat` does. Whatever is still
    buffered goes nowhere, so the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(ExitStatus.BROKEN_PIPE)


def _echo_json(data: Any) -> None:
    import json  # here: commands that print no JSON start without it

    click.echo(json.dumps(data, indent=2))


def _write_traceback() -> str:
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="tf-fleet-error-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        handle.write(traceback.format_exc())
    return path


class FleetGroup(click.Group):
    """Loads the local server's commands only when they are asked for or listed."""

    lazy = {"server": "server_command"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            from multiagent.server import cli as server_cli

            command: click.Command = getattr(server_cli, self.lazy[name])
            return command
        return super().get_command(ctx, name)


@click.group(cls=FleetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    default=lambda: os.environ.get("TF_FLEET_CONFIG", "fleet.yaml"),
    show_default="./fleet.yaml or $TF_FLEET_CONFIG",
    help="The fleet file.",
)
@click.option(
    "--state-dir",
    default=None,
    help="Where tf-fleet writes everything (overrides the fleet file's state_dir).",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Every line: each file written, each program started, each agent's progress"
    " (else one summary line per kind for large fleets).",
)
@click.option(
    "--local",
    "local_time",
    is_flag=True,
    help="Print times in the host's time zone (named) instead of UTC.",
)
@click.version_option(version=__version__, prog_name="tf-fleet")
@click.pass_context
def main(
    click_ctx: click.Context, config: str, state_dir: str | None, verbose: bool, local_time: bool
) -> None:
    """Run a host's Testflinger device agents under supervisord."""
    use_local_time(local_time)
    # Each line as it happens, also into a pipe (CI, `| tee`, a journal).
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure:
            reconfigure(line_buffering=True)
    click_ctx.obj = Options(config, state_dir, verbose)


pass_options = click.make_pass_decorator(Options)


# The commands that run safe operations end with one report, text or JSON.
json_report = click.option(
    "--json", "as_json", is_flag=True, help="Print the final report as JSON."
)


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from None


def _select(fleet: Fleet, names: tuple[str, ...], all_agents: bool) -> list[str]:
    if all_agents and names:
        raise click.UsageError("give agent names or --all, not both")
    if all_agents:
        return sorted(fleet.agents)
    if not names:
        raise click.UsageError("name at least one agent, or --all")
    _refuse_unknown(fleet, [n for n in names if n not in fleet.agents])
    return list(dict.fromkeys(names))


def _refuse_unknown(fleet: Fleet, unknown: list[str]) -> None:
    """Names the fleet file does not have: the same words in every command (exit 2)."""
    if unknown:
        raise click.UsageError(unknown_agents(unknown, fleet.path, sorted(fleet.agents)))


def _only_ours(fleet: Fleet, target: SupervisorTarget, names: list[str]) -> None:
    """Refuse (exit 2, naming the owner) to act on a program another fleet or a person
    defined in a shared supervisord, whatever this fleet file says."""
    from multiagent.fleet.supervisord.ownership import check_names_free

    check_names_free(fleet, target, names, {})


@contextmanager
def _changing(fleet: Fleet, command: str, supersede: bool = False) -> Iterator[None]:
    """One command that changes the fleet at a time (a second waits, or with
    --no-lock-wait fails at once; a forced one makes a waiting holder stop and takes
    over)."""
    from multiagent.fleet.host.statelock import exclusive

    opts = click.get_current_context().find_object(Options)
    wait = opts.lock_wait if opts else True
    with exclusive(Layout(fleet.state_dir), command, wait=wait, say=_say, supersede=supersede):
        yield


def lock_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--no-lock-wait, the same on every command that changes the fleet."""

    @click.option(
        "--no-lock-wait",
        is_flag=True,
        help="While another tf-fleet command changes this fleet, exit 1 at once (naming it)"
        " instead of waiting for it.",
    )
    @wraps(func)
    def with_lock(*args: Any, no_lock_wait: bool, **kwargs: Any) -> Any:
        opts = click.get_current_context().find_object(Options)
        if opts:
            opts.lock_wait = not no_lock_wait
        return func(*args, **kwargs)

    return with_lock


def _say(text: str) -> None:
    click.echo(text, err=True)


def _progress(enabled: bool) -> Callable[[Sequence[Operation]], None] | None:
    from multiagent.fleet.reconcile.progress import Progress

    if not enabled:
        return None
    opts = click.get_current_context().find_object(Options)
    progress = Progress(verbose=bool(opts and opts.verbose))
    if opts:
        opts.progress = progress
    return progress


def _failures_said() -> set[str]:
    """The failures the progress lines already said on stderr (never twice)."""
    opts = click.get_current_context().find_object(Options)
    progress = opts.progress if opts else None
    return progress.failures_said if progress else set()


def _carry_out(
    fleet: Fleet,
    supervisor: Supervisor,
    operations: Sequence[Operation],
    timeout: str | None,
    *,
    max_parallel: int | None = None,
    stop_on_failure: bool = False,
    wait: bool = True,
    show_progress: bool = True,
) -> RunResult:
    """Carry the operations out on the fleet's agents (all at once unless bounded), for at
    most `--timeout` or the fleet's restart timeout."""
    from multiagent.fleet.reconcile.scheduler import fleet_env
    from multiagent.fleet.reconcile.scheduler import run as run_operations

    return run_operations(
        operations,
        fleet_env(fleet, supervisor),
        max_parallel=max_parallel or len(operations),
        timeout=_duration(timeout) or fleet.restart.timeout,
        stop_on_failure=stop_on_failure,
        wait=wait,
        progress=_progress(show_progress),
    )


def _print_pending(result: RunResult) -> None:
    click.echo("timed out; still pending (nothing was interrupted):", err=True)
    for op in result.operations:
        if not op.done:
            click.echo(f"  {op.name}: {op.text}", err=True)


def _report(result: RunResult, as_json: bool, what: str) -> None:
    if as_json:
        _echo_json(result.to_json())
        return
    said = _failures_said()
    for op in result.operations:
        if op.failed and op.name not in said:
            click.echo(f"{op.name}: {op.text}", err=True)
        for note in op.notes:
            click.echo(f"{op.name}: {note}")
    done = sum(op.succeeded for op in result.operations)
    click.echo(f"{done}/{len(result.operations)} {what}.")
    if result.timed_out:
        _print_pending(result)
    if result.stopped_early:
        untouched = [op.name for op in result.operations if op.queued]
        click.echo(f"stopped after a failure; left untouched: {', '.join(untouched)}", err=True)


def _finish(result: RunResult, as_json: bool, what: str, failing: bool = True) -> None:
    """Report the result; exit FAILED if it did not all succeed (and that counts)."""
    _report(result, as_json, what)
    if failing and not result.ok:
        sys.exit(ExitStatus.FAILED)


def _actions_json(actions: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"name": a.name, "action": a.kind, "reasons": list(a.reasons)} for a in actions]


def canary_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--canary N and its health gate, shared by `up` and `restart --safe`: the command gets
    them as one `gate` (None without --canary)."""
    options = [
        click.option(
            "--canary",
            "canary_count",
            type=click.IntRange(min=1),
            default=None,
            help="Change N agents first (idle ones first); the rest follow once they pass.",
        ),
        click.option(
            "--canary-jobs",
            type=click.IntRange(min=0),
            default=0,
            help="The gate: each canary finished K jobs, all passing.",
        ),
        click.option(
            "--canary-job",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="The gate: this smoke job, submitted to each canary's queue, passes.",
        ),
        click.option(
            "--canary-timeout",
            default="15m",
            show_default=True,
            help="How long the canaries have to pass the gate.",
        ),
        click.option(
            "--canary-soak",
            default=None,
            help="How long each canary must stay up on the process it came back on, polling"
            " on time, before the rest follow (default: the fleet's restart.canary_soak, 30s).",
        ),
    ]

    @wraps(func)
    def with_gate(
        *args: Any,
        canary_count: int | None,
        canary_jobs: int,
        canary_job: Path | None,
        canary_timeout: str,
        canary_soak: str | None,
        **kwargs: Any,
    ) -> Any:
        gate = _gate(canary_count, canary_jobs, canary_job, canary_timeout, canary_soak)
        return func(*args, gate=gate, **kwargs)

    for option in reversed(options):
        with_gate = option(with_gate)
    return with_gate


def _gate(
    count: int | None, jobs: int, job_file: Path | None, timeout: str, soak: str | None
) -> CanaryGate | None:
    if count is None:
        if jobs or job_file or soak is not None:
            raise click.UsageError(
                "--canary-jobs, --canary-job and --canary-soak go with --canary N"
            )
        return None
    from multiagent.fleet.commands.canary import (
        CanaryGate,  # only with --canary: `up` starts faster without it
    )

    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--canary-timeout") from None
    try:
        soak_s = None if soak is None else parse_duration(soak)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--canary-soak") from None
    return CanaryGate(count, jobs, job_file, seconds, soak_s)


@main.command()
@pass_options
@handles_errors
def validate(opts: Options) -> None:
    """Check the fleet file and render it (nothing is written); report every problem with
    file, line, agent and field. What only the host can tell is left to `plan` and `up`."""
    from multiagent.fleet.commands.validate import LEFT_TO_PLAN, LEFT_TO_UP
    from multiagent.fleet.commands.validate import validate as check

    fleet = load_fleet(opts.config, opts.state_dir)
    check(fleet)
    click.echo(f"{opts.config}: {len(fleet.agents)} agent(s), valid.")
    click.echo(f"`tf-fleet plan` also checks, on this host: {'; '.join(LEFT_TO_PLAN)}.")
    click.echo(f"`tf-fleet up` also checks: {'; '.join(LEFT_TO_UP)}.")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--canary",
    "canary_count",
    type=click.IntRange(min=1),
    default=None,
    help="Show which N changed agents `up --canary N` would change first.",
)
@pass_options
@handles_errors
def plan(opts: Options, as_json: bool, canary_count: int | None) -> None:
    """Show what `up` would do, per agent, without doing it."""
    from multiagent.fleet.host.rendered import render_or_reuse
    from multiagent.fleet.reconcile.observe import make_plan

    fleet = opts.fleet()
    supervisor = _supervisor(fleet)
    rendered = render_or_reuse(fleet, supervisor.target)
    result = make_plan(fleet, Layout(fleet.state_dir), supervisor, rendered)
    canaries: list[str] = []
    if canary_count:
        from multiagent.fleet.commands.canary import choose
        from multiagent.fleet.commands.up import changed_agents

        changed = changed_agents(fleet, result)
        canaries = choose(fleet, supervisor, changed, canary_count) if changed else []
    rejection = _rejected_now(fleet, rendered.rendering)
    if not fleet.server.embedded:
        from multiagent.fleet.commands.duplicates import seen_elsewhere
        from multiagent.fleet.model.plan import ADD, START

        starting = [a.name for a in result.of_kind(ADD, START) if a.name in fleet.agents]
        for line in seen_elsewhere(fleet, starting):
            click.echo(f"warning: {line}", err=True)
    if as_json:
        data = {
            "actions": _actions_json(result.actions),
            "canaries": canaries,
            "rejected": rejection.to_json() if rejection else None,
        }
        _echo_json(data)
        return
    for action in result.actions:
        reasons = f"  ({'; '.join(action.reasons)})" if action.reasons else ""
        first = "  [canary]" if action.name in canaries else ""
        click.echo(f"{action.kind:<10} {action.name}{reasons}{first}")
    if rejection:
        from multiagent.fleet.host.rejected import ADVICE

        click.echo(f"rejected: {rejection.line()}; {ADVICE}")


def _rejected_now(fleet: Fleet, rendering: Rendering) -> Rejection | None:
    """The rejection on record when it is of this very rendering (the change `up` would
    refuse)."""
    from multiagent.fleet.host import rejected
    from multiagent.fleet.host.rendered import rendering_digest

    rejection = rejected.read(Layout(fleet.state_dir))
    if rejection is None or rejection.digest != rendering_digest(rendering):
        return None
    return rejection


@main.command()
@click.option(
    "--no-wait",
    is_flag=True,
    help="Start and ask, then return; the next `up` finishes the rest (it still waits its"
    " turn behind another command: see --no-lock-wait).",
)
@click.option(
    "--timeout",
    default=None,
    help="How long to wait for changed agents to be idle and back (default: the fleet's"
    " restart.timeout), e.g. 30m.",
)
@click.option(
    "--force-rejected",
    is_flag=True,
    help="Roll out a change a canary rejected (without it, `up` refuses that change).",
)
@json_report
@canary_options
@lock_option
@pass_options
@handles_errors
def up(
    opts: Options,
    no_wait: bool,
    timeout: str | None,
    force_rejected: bool,
    as_json: bool,
    gate: CanaryGate | None,
) -> None:
    """Render every agent, start supervisord if needed, start new agents, and apply changes
    safely: changed agents restart once idle, removed ones stop once idle."""
    from multiagent.fleet.commands.up import up as run_up

    if gate and no_wait:
        raise click.UsageError("--canary waits for its gate: it does not go with --no-wait")
    fleet = opts.fleet()
    supervisor = _supervisor(fleet, timeout)
    with _changing(fleet, "up"):
        report = run_up(
            fleet,
            supervisor,
            wait=not no_wait,
            restart_timeout=_duration(timeout),
            progress=_progress(not as_json),
            say=_say,
            canary=gate,
            force_rejected=force_rejected,
            lines=opts.lines(as_json),
        )
    if as_json:
        _echo_json(_up_json(report))
    else:
        _up_text(fleet, report, no_wait)
    if _up_failed(report, no_wait):
        sys.exit(ExitStatus.FAILED)


def _up_json(report: UpReport) -> dict[str, Any]:
    applied = report.applied
    return {
        "started_supervisord": report.started_supervisord,
        "written": [str(p) for p in report.written],
        "started": {n: report.states.get(n) for n in report.started},
        "plan": _actions_json(report.plan.actions),
        "applied": applied.to_json() if applied else None,
        "canaries": report.canaries,
        "canary_failure": report.canary_failure,
        "rolled_back": report.rolled_back.to_json() if report.rolled_back else None,
        "rest": report.rest.to_json() if report.rest else None,
    }


def _up_text(fleet: Fleet, report: UpReport, no_wait: bool) -> None:
    """What is left to say once `up` is over (files and starts were said as they
    happened)."""
    applied = report.applied
    if report.states:
        running = [n for n, state in report.states.items() if state == "RUNNING"]
        click.echo(f"running: {len(running)} of {plural(len(report.states), 'started program')}")
    if applied and no_wait:
        click.echo("asked; `tf-fleet plan` or `tf-fleet status` shows what is pending")
        from multiagent.fleet.model.operations import Replace

        held = [op.name for op in applied.operations if isinstance(op, Replace) and not op.done]
        if held:
            click.echo(
                f"held down after its job until the next `tf-fleet up` swaps it: {', '.join(held)}"
            )
    elif applied and applied.timed_out:
        _print_pending(applied)
    for name, pids in sorted(report.strays_left.items()):
        click.echo(
            f"{name}: pid {', '.join(map(str, pids))} (left by a supervisord that died) runs"
            " until its job ends; the next `up` starts its program",
            err=True,
        )
    if report.canaries and not report.canary_failure:
        click.echo(f"canaries passed: {', '.join(report.canaries)}; the rest followed")
    click.echo(_plan_summary(fleet, report.plan))


def _plan_summary(fleet: Fleet, plan: Any) -> str:
    """`3 add, 1 unchanged` for the agents; the server's own action apart."""
    server = fleet.server_program
    agents = [a for a in plan.actions if a.name != server]
    counts = {k: sum(a.kind == k for a in agents) for k in PLAN_KINDS}
    text = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    server_action = next((a.kind for a in plan.actions if a.name == server), None)
    if server_action and server_action != "unchanged":
        text = f"{text}; server {server}: {server_action}" if text else f"server: {server_action}"
    return text or "nothing to do"


def _up_failed(report: UpReport, no_wait: bool) -> bool:
    """Say what failed (on stderr, also with --json); True when `up` must exit 1."""
    for line in report.duplicates:
        click.echo(f"warning: {line}", err=True)
    failed = report.failed_to_start
    if failed:
        listed = ", ".join(f"{n} ({report.states.get(n)})" for n in failed)
        click.echo(f"failed to start: {listed}; `tf-fleet status` shows why", err=True)
    if report.canary_failure:
        click.echo(
            f"canary gate failed: {report.canary_failure}; rolled back"
            f" {', '.join(report.canaries)} to their previous files; every other agent was"
            " left as it was",
            err=True,
        )
        return True
    applied, rest = report.applied, report.rest
    return bool(
        failed
        or (rest is not None and not rest.ok)
        or (applied and not no_wait and not applied.ok)
        or (report.strays_left and not no_wait)
    )


def _refuse_file_for_upstream(method: str, operations: Sequence[Operation]) -> None:
    """Upstream's agent looks for no restart file: asking it that way would wait for ever."""
    upstream = [op.name for op in operations if op.kind == ProgramKind.UPSTREAM]
    if method == "file" and upstream:
        raise click.BadParameter(
            f"the restart file cannot restart {', '.join(upstream)}: upstream's agent "
            "honours only SIGUSR1; use --method signal",
            param_hint="--method",
        )


@main.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_agents", is_flag=True, help="Every agent of the fleet, rolling.")
@click.option("--safe", is_flag=True, help="Restart only when idle (never interrupt a job).")
@click.option(
    "--max-parallel",
    default=1,
    show_default=True,
    help="With --safe: how many agents may be restarting at once; 0: every one asked at"
    " once, each restarting when its own job ends (a host's roll takes its longest job).",
)
@click.option("--timeout", default=None, help="How long to wait (default: restart.timeout).")
@click.option(
    "--method",
    type=click.Choice(["signal", "file"]),
    default=None,
    help="How to ask (default: restart.method): SIGUSR1 or the restart file.",
)
@click.option("--no-wait", is_flag=True, help="With --safe: only ask, then return.")
@click.option("--force", is_flag=True, help="Without --safe: restart even mid-job.")
@json_report
@canary_options
@lock_option
@pass_options
@handles_errors
def restart(
    opts: Options,
    names: tuple[str, ...],
    all_agents: bool,
    safe: bool,
    max_parallel: int,
    timeout: str | None,
    method: str | None,
    no_wait: bool,
    force: bool,
    as_json: bool,
    gate: CanaryGate | None,
) -> None:
    """Restart agents. --safe: each exits when idle and comes back; with --all, a rolling
    restart that stops at the first agent that does not come back."""
    _restart_flags(safe, force, no_wait or gate is not None or max_parallel != 1 or bool(method))
    fleet = opts.fleet()
    supervisor = _supervisor(fleet, timeout)
    selected = _select(fleet, names, all_agents)
    _only_ours(fleet, supervisor.target, selected)
    if not safe:
        from multiagent.fleet.commands.control import hard_restart

        command = "restart --force" if force else "restart"
        with _changing(fleet, command, supersede=force):
            pids, interrupted = hard_restart(fleet, supervisor, selected, force)
        for one in interrupted:
            click.echo(one.line())
        opts.lines().many(
            [f"{name}: restarted (pid {pid})" for name, pid in pids.items()],
            f"restarted {plural(len(pids), 'agent')}",
        )
        return
    if max_parallel < 0:
        raise click.BadParameter("must be 0 (all at once) or more", param_hint="--max-parallel")
    max_parallel = max_parallel or max(1, len(selected))
    from multiagent.fleet.model.operations import SafeRestart
    from multiagent.fleet.supervisord.ownership import program_kind

    if gate and no_wait:
        raise click.UsageError("--canary waits for its gate: it does not go with --no-wait")
    from multiagent.fleet.host.installed import refuse_stale_entries

    refuse_stale_entries(supervisor.target, selected)
    method = method or fleet.restart.method
    operations = [
        SafeRestart(n, program_kind(fleet, supervisor.target, n), method) for n in selected
    ]
    _refuse_file_for_upstream(method, operations)

    def run(ops: list[Operation]) -> RunResult:
        return _carry_out(
            fleet,
            supervisor,
            ops,
            timeout,
            max_parallel=max_parallel,
            stop_on_failure=True,
            wait=not no_wait,
            show_progress=not as_json,
        )

    with _changing(fleet, "restart --safe"):
        if gate is None:
            result = run(list(operations))
        else:
            from multiagent.fleet.commands.canary import restart_in_two

            result, failure, untouched = restart_in_two(
                fleet, supervisor, selected, method, gate, run, _say
            )
            if failure:
                _report(result, as_json, "back")
                click.echo(
                    f"canary gate failed: {failure}; left untouched: {', '.join(untouched)}",
                    err=True,
                )
                sys.exit(ExitStatus.FAILED)
    if no_wait and not as_json:
        click.echo(f"asked {len(operations)} agent(s) to restart when idle")
        return
    _finish(result, as_json, "back", failing=not no_wait)


def _restart_flags(safe: bool, force: bool, safe_only: bool) -> None:
    """Flags that contradict each other are a usage error (exit 2), never one ignored."""
    if safe and force:
        raise click.UsageError("--safe never interrupts a job and --force does: give one")
    if not safe and safe_only:
        raise click.UsageError(
            "--no-wait, --canary, --max-parallel and --method go with --safe; a hard"
            " restart neither waits nor asks"
        )


@main.command()
@click.option(
    "--timeout", default=None, help="How long to wait for jobs (default restart.timeout)."
)
@json_report
@lock_option
@pass_options
@handles_errors
def rollback(opts: Options, timeout: str | None, as_json: bool) -> None:
    """Put the agents the last `up` changed back on their previous files, safely (each
    after its job). The fleet file is not changed: fix it before the next `up`."""
    from multiagent.fleet.commands.canary import restore, saved
    from multiagent.fleet.host.applied import write_applied
    from multiagent.fleet.host.rendered import render_or_reuse

    fleet = opts.fleet()
    supervisor = _supervisor(fleet, timeout)
    layout = Layout(fleet.state_dir)
    with _changing(fleet, "rollback"):
        names = saved(layout)
        if not names:
            click.echo(_nothing_to_roll_back(layout))
            return
        operations = restore(fleet, supervisor.target, names)
        result = _carry_out(fleet, supervisor, operations, timeout, show_progress=not as_json)
        # `names` are back on files older than the fleet file: left out of the record.
        rendering = render_or_reuse(fleet, supervisor.target).rendering
        write_applied(layout, supervisor, rendering, names)
    _finish(result, as_json, "rolled back")


def _nothing_to_roll_back(layout: Layout) -> str:
    """Why there is nothing to roll back, and the state the fleet is in."""
    from multiagent.fleet.host import rejected

    rejection = rejected.read(layout)
    if rejection is None:
        return "nothing to roll back: no change kept its previous files"
    return (
        f"nothing to roll back: {rejection.line()}; {', '.join(rejection.agents)} went back"
        " on its previous files then, and every other agent never left them: the fleet runs"
        " what it ran before that change. The fleet file still holds the rejected change;"
        f" {rejected.ADVICE}"
    )


@main.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_agents", is_flag=True, help="Every agent of the fleet.")
@click.option("--wait", is_flag=True, help="Return when every named agent is idle.")
@click.option("--timeout", default=None, help="With --wait: how long (default restart.timeout).")
@click.option("--reason", default="", help="Why: shown with the agent's state on the server.")
@json_report
@lock_option
@pass_options
@handles_errors
def drain(
    opts: Options,
    names: tuple[str, ...],
    all_agents: bool,
    wait: bool,
    timeout: str | None,
    reason: str,
    as_json: bool,
) -> None:
    """Take no new jobs (running jobs go on); `resume` undoes it."""
    from multiagent.fleet.model.operations import Drain
    from multiagent.fleet.supervisord.ownership import program_kind

    fleet = opts.fleet()
    supervisor = _supervisor(fleet, timeout)
    selected = _select(fleet, names, all_agents)
    _only_ours(fleet, supervisor.target, selected)
    operations = [
        Drain(n, program_kind(fleet, supervisor.target, n), reason=reason) for n in selected
    ]
    already = _drained(fleet, selected)
    with _changing(fleet, "drain"):
        result = _carry_out(
            fleet, supervisor, operations, timeout, wait=wait, show_progress=wait and not as_json
        )
    if not wait:
        failed = [op for op in operations if op.failed]
        if as_json:
            _echo_json(result.to_json())
        else:
            for op in failed:
                click.echo(f"{op.name}: {op.text}", err=True)
            done = [op.name for op in operations if not op.failed]
            lines = opts.lines()
            lines.many(
                [f"{n}: already drained" if n in already else f"{n}: drained" for n in done],
                f"drained {plural(len(done), 'agent')} ({len(already)} already)",
            )
            if done:
                lines.say("they take no new job; running jobs go on (`tf-fleet resume` undoes it)")
        sys.exit(ExitStatus.FAILED if failed else ExitStatus.OK)
    _finish(result, as_json, "idle")


@main.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_agents", is_flag=True, help="Every agent of the fleet.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@lock_option
@pass_options
@handles_errors
def resume(opts: Options, names: tuple[str, ...], all_agents: bool, as_json: bool) -> None:
    """Take jobs again after `drain` (and start agents a hold left down)."""
    from multiagent.fleet.commands.control import resume as run_resume

    fleet = opts.fleet()
    supervisor = _supervisor(fleet)
    selected = _select(fleet, names, all_agents)
    _only_ours(fleet, supervisor.target, selected)
    drained = _drained(fleet, selected)
    with _changing(fleet, "resume"):
        resumed = run_resume(fleet, supervisor, selected)
    if as_json:
        agents = [{"name": n, "started": started} for n, started in resumed.items()]
        _echo_json({"agents": agents})
        return
    lines = opts.lines()
    said = []
    for name, started in resumed.items():
        if started:
            said.append(f"{name}: resumed and started")
        elif name in drained:
            said.append(f"{name}: resumed")
        else:
            said.append(f"{name}: was not drained; takes jobs as before")
    lines.many(said, f"resumed {plural(len(resumed), 'agent')} ({len(drained)} were drained)")


def _drained(fleet: Fleet, names: list[str]) -> set[str]:
    """The tf-agents among `names` whose drain flag is set now (an upstream agent's drain
    is its state on the server: not known here)."""
    from multiagent.fleet.host.triggers import read_drain

    layout = Layout(fleet.state_dir)
    return {n for n in names if read_drain(layout, n)}


def _status_format(as_json: bool, output: str | None) -> str:
    if as_json and output not in (None, "json"):
        raise click.UsageError(f"--json is --format json: give one, not --format {output} too")
    return "json" if as_json else output or "table"


@main.command()
@click.argument("names", nargs=-1)
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "json", "prometheus"]),
    default=None,
    help="table (default), json, or prometheus: gauges in the text exposition format for"
    " node_exporter's textfile collector (exit 0 whatever they say).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (same as --format json).")
@pass_options
@handles_errors
def status(opts: Options, names: tuple[str, ...], output: str | None, as_json: bool) -> None:
    """One line per agent: process, pid, uptime, state, job, restart, last poll."""
    output = _status_format(as_json, output)
    fleet = opts.fleet()
    supervisor = _supervisor(fleet)
    supervisor.ask_ahead()  # supervisord builds its answer while this command goes on
    from multiagent.fleet.commands.drift import drift
    from multiagent.fleet.commands.status import format_table, look
    from multiagent.fleet.host.rendered import render_or_reuse

    wanted = list(names) or sorted(fleet.agents)
    _refuse_unknown(
        fleet, [n for n in wanted if n not in fleet.agents and n != fleet.server_program]
    )
    agents = [n for n in wanted if n in fleet.agents]
    drift_check = not names and output != "prometheus"
    rendered = render_or_reuse(fleet, supervisor.target) if drift_check else None
    # A reused rendering is the text of the files on disk, read just now.
    read = rendered.rendering.all_files() if rendered is not None and rendered.reused else None
    running, rows, server, note, processes = look(
        fleet, supervisor, agents, without_supervisord=output == "prometheus", read=read
    )
    from multiagent.fleet.host import rejected

    rejection = rejected.read(Layout(fleet.state_dir))
    if output == "prometheus":
        import time

        from multiagent.fleet.commands.prometheus import fleet_label, status_text

        if note:
            click.echo(note, err=True)
        import socket

        label = fleet_label(fleet)
        host = socket.gethostname()
        text = status_text(running, rows, server, time.time(), label, host, rejection)
        click.echo(text, nl=False)
        return
    drifted = [] if rendered is None else drift(fleet, supervisor, running, processes, rendered)
    if output == "json":
        data = {
            "supervisord_running": running,
            "server": server.to_json(),
            "agents": [r.to_json() for r in rows],
            "rejected": rejection.to_json() if rejection else None,
            "drift": drifted,
        }
        _echo_json(data)
    else:
        if not running:
            click.echo(f"supervisord is not running ({supervisor.target.socket_url})")
        click.echo(server.headline())
        if note:
            click.echo(note)
        if rejection:
            click.echo(f"rejected: {rejection.line()}; {rejected.ADVICE}")
        if rows:
            click.echo(format_table(rows))
        for line in drifted:
            click.echo(line)
    if any(r.failed for r in rows) or server.failed or drifted:
        sys.exit(ExitStatus.FAILED)


@main.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="How many lines to show.",
)
@pass_options
@handles_errors
def logs(opts: Options, name: str, follow: bool, lines: int) -> None:
    """Print an agent's log (what it wrote to stdout and stderr)."""
    from multiagent.fleet.host.logs import follow as follow_log
    from multiagent.fleet.host.logs import tail_lines

    fleet = opts.fleet()
    if name not in fleet.agents and name != fleet.server_program:
        _refuse_unknown(fleet, [name])
    from multiagent.fleet.supervisord.client import target_for

    _only_ours(fleet, target_for(fleet), [name])
    path = Layout(fleet.state_dir).log_file(name)
    if not path.exists():
        click.echo(f"{name} has no log yet ({path})", err=True)
        sys.exit(ExitStatus.FAILED)
    for line in tail_lines(path, lines, max_bytes=max(64 * 1024, lines * 512)):
        click.echo(line)
    if follow:
        follow_log(path, lambda text: click.echo(text, nl=False))


@main.command()
@click.option("--safe", is_flag=True, help="Drain every agent and wait for running jobs.")
@click.option("--force", is_flag=True, help="Stop even agents that are running a job.")
@click.option("--timeout", default=None, help="With --safe: how long to wait for jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@lock_option
@pass_options
@handles_errors
def down(opts: Options, safe: bool, force: bool, timeout: str | None, as_json: bool) -> None:
    """Stop every agent and, in private mode, supervisord."""
    from multiagent.fleet.commands.down import down as run_down

    if safe and force:
        raise click.UsageError(
            "--safe waits for running jobs and --force interrupts them: give one"
        )
    fleet = opts.fleet()
    supervisor = _supervisor(fleet, timeout)
    supervisord_was_running = supervisor.is_running()
    watched = _refuse_watched_server(fleet, force)
    with _changing(fleet, "down --force" if force else "down", supersede=force):
        stopped, drained, interrupted = run_down(
            fleet,
            supervisor,
            safe=safe,
            force=force,
            timeout=_duration(timeout) or fleet.restart.timeout,
            progress=_progress(safe),
        )
    stopped_supervisord = supervisor.target.mode == "private" and supervisord_was_running
    if drained and not drained.ok:
        _report(drained, as_json, "stopped")
        click.echo("supervisord left running; agents still busy are draining", err=True)
        sys.exit(ExitStatus.FAILED)
    if as_json:
        data = {
            "stopped": stopped,
            "stopped_supervisord": stopped_supervisord,
            "interrupted": [one.to_json() for one in interrupted],
        }
        _echo_json(data)
        return
    for one in interrupted:
        click.echo(one.line())
    for watcher in watched:
        click.echo(
            f"warning: stopped the server under {watcher.text()}: it cannot read its job's end",
            err=True,
        )
    listed = stopped and (len(stopped) <= SUMMARY_OVER or opts.verbose)
    click.echo(
        f"stopped {plural(len(stopped), 'program')}" + (f": {', '.join(stopped)}" if listed else "")
    )
    if stopped_supervisord:
        click.echo("supervisord stopped")


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@pass_options
@handles_errors
def ctl(opts: Options, args: tuple[str, ...]) -> None:
    """Run the host's supervisorctl on this fleet's supervisord (private or system):
    `tf-fleet ctl status`, `tf-fleet ctl tail -f dut-01`, `tf-fleet ctl signal USR1
    dut-01`. Its exit status is supervisorctl's."""
    import shutil

    fleet = opts.fleet()
    from multiagent.fleet.supervisord.client import target_for

    target = target_for(fleet)
    found = shutil.which("supervisorctl")
    command = [found] if found else [sys.executable, "-m", "supervisor.supervisorctl"]
    command += ["-c", str(target.config), *args]
    sys.stdout.flush()
    try:
        os.execvp(command[0], command)  # supervisorctl's own terminal, signals and status
    except OSError as exc:
        raise click.ClickException(f"cannot run {command[0]}: {exc.strerror}") from exc


def _refuse_watched_server(fleet: Fleet, force: bool) -> list[Watcher]:
    """`submit --wait` processes that follow a job on the fleet's embedded server. Without
    --force `down` refuses (exit 1): stopped under them, they would end in a connection
    error though their job ended well; each ends by itself once its job ends. With
    --force, the ones it stops the server under (said at the end)."""
    if not fleet.server.embedded:
        return []
    from multiagent.fleet.host.watchers import watchers

    found = watchers(fleet.server.url)
    if found and not force:
        for watcher in found:
            click.echo(f"{watcher.text()} follows a job on this fleet's server", err=True)
        click.echo(
            "refusing to stop the server under it: it ends by itself once its job ends;"
            " wait for it, or use --force (it then cannot read its job's end)",
            err=True,
        )
        sys.exit(ExitStatus.FAILED)
    return found


@main.command("submit")
@click.argument("job_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--server",
    envvar="TESTFLINGER_SERVER",
    default="http://127.0.0.1:8585",
    show_default=True,
    help="Server URL (env TESTFLINGER_SERVER).",
)
@click.option("--wait", is_flag=True, help="Follow the job to its end; exit 1 if a phase failed.")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Bearer token for a server started with --token-file.",
)
@click.option(
    "--poll-interval",
    default=0.5,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between looks at the job's state and new output with --wait.",
)
@handles_errors
def submit_command(
    job_file: Path, server: str, wait: bool, token_file: Path | None, poll_interval: float
) -> None:
    """Submit JOB_FILE (YAML or JSON) with its attachments; print the job id."""
    # A client of any Testflinger-compatible server, the local one or a lab's.
    import yaml

    from multiagent.fleet.commands.submit import (
        follow,
        pack_attachments,
        queue_warning,
        refusal_lines,
        server_url_problem,
    )
    from multiagent.fleet.serverclient import Refused, ServerClient, ServerError
    from multiagent.tokenfile import read_token_file

    problem = server_url_problem(server)
    if problem:
        raise click.BadParameter(problem, param_hint="--server")

    try:
        job = yaml.safe_load(job_file.read_text())
    except yaml.YAMLError as exc:
        raise click.UsageError(f"{job_file}: not valid YAML: {exc}") from exc
    if not isinstance(job, dict):
        raise click.UsageError(f"{job_file}: a job is a mapping with at least job_queue")
    token = read_token_file(token_file) if token_file else None
    client = ServerClient(server, token)
    try:
        job, archive = pack_attachments(job, job_file.resolve().parent)
        try:
            job_id = client.submit(job, archive)
        except Refused as exc:
            for line in refusal_lines(exc.status, exc.body, job, client):
                click.echo(line, err=True)
            sys.exit(ExitStatus.FAILED)
        click.echo(job_id)
        warning = queue_warning(client, str(job.get("job_queue") or ""))
        if warning:
            click.echo(warning, err=True)
        if wait:
            sys.exit(follow(client, job_id, click.echo, interval=poll_interval))
    except ServerError as exc:  # unreachable included: it names the server
        raise click.ClickException(str(exc)) from exc
