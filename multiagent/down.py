"""`down`: stop every agent of the fleet (and the private supervisord), never mid-job
unless forced."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from . import plan as planning
from . import triggers
from .context import Context
from .control import refuse_if_busy
from .fleet import SERVER_PROGRAM
from .observe import managed_programs
from .operations import Operation, RunResult, SafeStop
from .scheduler import run as run_operations
from .supervisor import SupervisorError


def down(
    ctx: Context,
    *,
    safe: bool = False,
    force: bool = False,
    timeout: float = 120.0,
    progress: Callable[[Sequence[Operation]], None] | None = None,
) -> tuple[list[str], RunResult | None]:
    """Stop every agent (and the private supervisord). `safe` waits for running jobs;
    without it, running jobs make it refuse unless `force`. Returns the programs that
    were running, and the safe stops' result (None without `safe`)."""
    supervisor = ctx.supervisor
    if not supervisor.is_running():
        return [], None
    processes = supervisor.processes()
    managed = managed_programs(ctx, {n: i.state for n, i in processes.items()})
    running = sorted(
        n for n in managed if n in processes and processes[n].state not in planning.DOWN_STATES
    )
    drained = None
    if safe:
        drained = _stop_safely(ctx, running, timeout, progress)
        if not drained.ok:
            return running, drained
    elif not force:
        refuse_if_busy(
            ctx,
            running,
            "refusing to stop agents that run jobs: use --safe to wait for them,"
            " or --force to interrupt them",
        )
    if ctx.target.mode == "private":
        _shutdown_private(ctx, timeout)
    else:
        # Agents first, the server last, so agents can report their state on the way out.
        for name in sorted(running, key=lambda n: n == SERVER_PROGRAM):
            supervisor.stop(name, True)
    if safe:
        for name in running:
            triggers.clear_drain(ctx.layout, name)  # a later `up` starts them again
    return running, drained


def _stop_safely(
    ctx: Context,
    running: list[str],
    timeout: float,
    progress: Callable[[Sequence[Operation]], None] | None,
) -> RunResult:
    agents = [n for n in running if n != SERVER_PROGRAM]
    operations = [SafeStop(n, ctx.kind(n)) for n in agents]
    return run_operations(
        operations,
        ctx.env(),
        max_parallel=max(1, len(operations)),
        timeout=timeout,
        stop_on_failure=False,
        progress=progress,
    )


def _shutdown_private(ctx: Context, timeout: float) -> None:
    pid = ctx.supervisor.pid()
    ctx.supervisor.shutdown()  # stops every program, waiting stopwaitsecs for each, then exits
    deadline = time.monotonic() + max(timeout, 30.0)
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        raise SupervisorError(f"supervisord (pid {pid}) did not exit within {timeout:.0f} s")


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
