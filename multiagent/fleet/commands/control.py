"""Direct commands on agents that wait for nothing: busy check, hard restart, resume."""

from __future__ import annotations

from multiagent.fleet.context import Context
from multiagent.fleet.errors import BusyError
from multiagent.fleet.host import triggers
from multiagent.fleet.model.fleetfile import UPSTREAM
from multiagent.fleet.model.operations import DOWN, LIVE
from multiagent.fleet.reconcile.scheduler import take_snapshot
from multiagent.fleet.supervisord.client import Faults, ProcessInfo, SupervisorError
from multiagent.vocabulary import AGENT_WAITING


def busy_agents(
    ctx: Context, names: list[str], processes: dict[str, ProcessInfo] | None = None
) -> dict[str, str]:
    """{name: what it is doing} for each of `names` that runs a job now (`processes`:
    supervisord's answer, when the caller has just asked it)."""
    if not names:
        return {}
    snap = take_snapshot(ctx.env(), {n: ctx.kind(n) for n in names}, processes)
    found = {}
    for name in names:
        is_busy, text = snap.busy(name, ctx.kind(name))
        if is_busy:
            found[name] = text
    return found


def refuse_if_busy(
    ctx: Context,
    names: list[str],
    advice: str,
    processes: dict[str, ProcessInfo] | None = None,
) -> None:
    busy = busy_agents(ctx, [n for n in names if n != ctx.fleet.server_program], processes)
    if busy:
        raise BusyError(busy, advice)


def hard_restart(ctx: Context, names: list[str], force: bool) -> dict[str, int]:
    """Stop and start each agent at once; refused for busy agents unless `force`.
    Returns {name: new pid}."""
    if not force:
        refuse_if_busy(
            ctx, names, "use --safe to restart when idle, or --force to interrupt the job"
        )
    pids = {}
    for name in names:
        if ctx.supervisor.process(name).state in (*LIVE, "BACKOFF"):
            try:
                ctx.supervisor.stop(name, True)
            except SupervisorError as exc:
                if exc.code != Faults.NOT_RUNNING:
                    raise
        ctx.supervisor.start(name, True)
        pids[name] = ctx.supervisor.process(name).pid
    return pids


def resume(ctx: Context, names: list[str]) -> dict[str, bool]:
    """Take jobs again after a drain; start agents a hold left down.
    Returns {name: whether it was started}."""
    started = {}
    tokens = ctx.token_files()
    for name in names:
        triggers.clear_drain(ctx.layout, name)
        if ctx.kind(name) == UPSTREAM:
            triggers.set_server_state(
                ctx.fleet.server.url, name, AGENT_WAITING, "", tokens.get(name)
            )
        down = ctx.supervisor.process(name).state in DOWN
        if down:
            ctx.supervisor.start(name, False)
        started[name] = down
    return started
