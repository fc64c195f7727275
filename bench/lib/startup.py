"""Figures 3 and 4: cold `up` and `down` against a bare supervisord starting and stopping
as many sleeping interpreters; no-change `up` and `status` against `supervisorctl status`."""

from __future__ import annotations

import time

from . import breakdown
from .bare import BareSupervisor
from .breakdown import Start
from .common import (
    Row,
    absolute_target,
    median,
    ratio_target,
    sampled,
    supervisorctl_cmd,
    timed_run,
)
from .fleet import BenchFleet, PollWatcher, wait_all_polled


def cold_up(fleet: BenchFleet, timeout: float = 900.0) -> Start:
    """`tf-fleet up` of a fresh fleet: when it returned, when the last agent first polled
    (seconds from the launch), its phases and the CPU of each kind of process."""
    with PollWatcher(fleet) as watcher:
        before = breakdown.children_before()
        t0 = time.time()
        wall = fleet.up(timeout=timeout)
        polled = wait_all_polled(fleet, watcher, timeout)
    start = breakdown.Start(t0, returned=wall, polled=polled - t0)
    start.cpu["command"], start.counts["command"] = breakdown.children_before() - before, 1
    breakdown.log_phases(start, fleet.layout.supervisord_log)
    breakdown.tree_cpu(start, fleet.supervisord_pid(), _kind)
    start.unreachable = breakdown.count_unreachable(fleet.layout.logs_dir, fleet.names)
    return start


def _kind(cmdline: list[str]) -> str:
    return "server" if "multiagent.server" in cmdline else "agent"


def ready(start: Start) -> float:
    """Every agent RUNNING (the command returned) and polling: the later of the two."""
    return max(start.returned or 0.0, start.polled or 0.0)


def down(fleet: BenchFleet) -> float:
    """`tf-fleet down` of an idle fleet (no --force: idle agents need none), seconds."""
    fleet.remember_pids()
    wall = fleet.cli("down", timeout=600)
    fleet.started = False
    return wall


def bare_cycle(bare: BareSupervisor) -> tuple[Start, float]:
    """(launch -> all RUNNING, `stop all` + `shutdown` -> gone), seconds."""
    try:
        return bare.start(), bare.stop_all_and_shutdown()
    finally:
        bare.close()


def cold_rows(count: int, starts: list[Start], bare: list[Start]) -> list[Row]:
    bare_up = [b.last_running or 0.0 for b in bare]
    walls = [s.returned or 0.0 for s in starts]
    polled = [s.polled or 0.0 for s in starts]
    base = sampled(
        f"Bare supervisord: {count} sleeping interpreters (`python -S`) → all RUNNING",
        bare_up,
        "s",
        note="baseline; startsecs 1; from the launch to supervisord's last RUNNING line",
        force_p95=True,
    )
    row = sampled(
        f"Cold `tf-fleet up`, {count} agents → every agent RUNNING and polling",
        [ready(s) for s in starts],
        "s",
        bare_up,
        "bare supervisord, as many -S sleepers → all RUNNING",
        note=f"the later of the command's return (median {median(walls):.3f} s) and the"
        f" last agent's first poll (median {median(polled):.3f} s); startsecs 1; includes"
        " supervisord and the embedded server",
        force_p95=True,
    )
    return [base, ratio_target(row, 1.5)]


def down_rows(count: int, downs: list[float], bare_down: list[float]) -> list[Row]:
    base = sampled(
        f"Bare supervisord: `supervisorctl stop all`, then `shutdown`, {count} sleepers",
        bare_down,
        "s",
        note="baseline; until supervisord is gone",
        force_p95=True,
    )
    row = sampled(
        f"`tf-fleet down`, {count} idle agents",
        downs,
        "s",
        bare_down,
        "bare `stop all` + `shutdown`",
        note="until supervisord is gone",
        force_p95=True,
    )
    return [base, ratio_target(row, 1.5)]


def status_rows(fleet: BenchFleet, reps: int) -> list[Row]:
    """No-change `up`, `status`, `status --json`, interleaved with `supervisorctl status`."""
    ctl = supervisorctl_cmd("-c", str(fleet.conf), "status")
    samples: dict[str, list[float]] = {"ctl": [], "up": [], "text": [], "json": []}
    for _ in range(reps):
        samples["ctl"].append(timed_run(ctl, timeout=60, check=False)[0])
        samples["up"].append(fleet.cli("up", timeout=120))
        samples["text"].append(fleet.cli_output("status")[0])
        samples["json"].append(fleet.cli_output("status", "--json")[0])
    count = len(fleet.names)
    rows = [
        sampled(
            f"`supervisorctl status`, {count} agents (wall)",
            samples["ctl"],
            "s",
            note="baseline",
        )
    ]
    for key, label in (
        ("up", f"No-change `tf-fleet up`, {count} agents (wall)"),
        ("text", f"`tf-fleet status` text, {count} agents (wall)"),
        ("json", f"`tf-fleet status` --json, {count} agents (wall)"),
    ):
        row = sampled(label, samples[key], "s", samples["ctl"], "supervisorctl status")
        rows.append(absolute_target(row, 0.5))
    return rows
