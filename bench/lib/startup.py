"""Figures 3 and 4: cold `up` and `down` against a bare supervisord starting and stopping
as many sleeping interpreters; no-change `up` and `status` against `supervisorctl status`."""

from __future__ import annotations

import time

from .bare import BareSupervisor
from .common import Row, absolute_target, ratio_target, sampled, supervisorctl_cmd, timed_run
from .fleet import BenchFleet, PollWatcher, wait_all_polled


def cold_up(fleet: BenchFleet, timeout: float = 900.0) -> tuple[float, float]:
    """`tf-fleet up` of a fresh fleet: (command wall, launch -> every agent polling), s."""
    with PollWatcher(fleet) as watcher:
        t0 = time.time()
        wall = fleet.up(timeout=timeout)
        polled = wait_all_polled(fleet, watcher, timeout)
    return wall, polled - t0


def down(fleet: BenchFleet) -> float:
    """`tf-fleet down` of an idle fleet (no --force: idle agents need none), seconds."""
    fleet.remember_pids()
    wall = fleet.cli("down", timeout=600)
    fleet.started = False
    return wall


def bare_cycle(bare: BareSupervisor) -> tuple[float, float]:
    """(launch -> all RUNNING, `stop all` + `shutdown` -> gone), seconds."""
    try:
        return bare.start(), bare.stop_all_and_shutdown()
    finally:
        bare.close()


def cold_rows(
    count: int, polled: list[float], walls: list[float], bare_up: list[float]
) -> list[Row]:
    base = "bare supervisord, as many sleeping interpreters → all RUNNING"
    rows = [
        sampled(
            f"Bare supervisord: {count} sleeping interpreters → all RUNNING",
            bare_up,
            "s",
            note="baseline; startsecs 1",
            force_p95=True,
        ),
        sampled(
            f"Cold `tf-fleet up`, {count} agents, command wall (returns at RUNNING)",
            walls,
            "s",
            bare_up,
            base,
            note="startsecs 1; includes supervisord and the embedded server",
            force_p95=True,
        ),
    ]
    polled_row = sampled(
        f"Cold `tf-fleet up`, {count} agents → all polling",
        polled,
        "s",
        bare_up,
        base,
        note="startsecs 1; from launch to the last agent's first poll",
        force_p95=True,
    )
    return [*rows, ratio_target(polled_row, 1.5)]


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
