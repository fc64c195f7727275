"""Figures 1 and 2: idle safe restarts (through the CLI, against `supervisorctl restart`;
asked straight of the agent, against a bare program supervisord respawns), and rolling
restarts of the whole fleet against the same roll done over XML-RPC on bare sleepers."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from multiagent.fleet.host.procinfo import process_start_time

from .bare import RESPAWNER as RESPAWNER_SCRIPT
from .bare import BareSupervisor, sleepers
from .common import (
    Reaper,
    Row,
    median,
    pct,
    ratio_target,
    sampled,
    supervisorctl_cmd,
    timed_run,
    wait_for,
)
from .fleet import BenchFleet

# variant -> trigger; each returns nothing and is timed from just before it is called
Trigger = Callable[[BenchFleet, str], None]


def _cli(method: str) -> Trigger:
    def trigger(fleet: BenchFleet, name: str) -> None:
        fleet.cli("restart", "--safe", name, "--method", method, timeout=60)

    return trigger


def _signal(fleet: BenchFleet, name: str) -> None:
    fleet.rpc.signalProcess(name, "USR1")


def _file(fleet: BenchFleet, name: str) -> None:
    fd = os.open(fleet.restart_file(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


def _hard_ctl(fleet: BenchFleet, name: str) -> None:
    timed_run(supervisorctl_cmd("-c", str(fleet.conf), "restart", name), timeout=60)


VARIANTS: dict[str, Trigger] = {
    "cli-signal": _cli("signal"),
    "cli-file": _cli("file"),
    "hard-ctl": _hard_ctl,
    "trigger-signal": _signal,
    "trigger-file": _file,
}
RESPAWNER = "respawner"


def bare_respawner(root: Path, reaper: Reaper) -> tuple[BareSupervisor, Path]:
    """A bare supervisord running one program that writes a file as it starts and exits 1
    on SIGUSR1 (the floor of a restart asked straight of a supervised program)."""
    root.mkdir(parents=True, exist_ok=True)
    script, marker = root / "respawner.py", root / "started"
    script.write_text(RESPAWNER_SCRIPT)
    bare = BareSupervisor(root, {RESPAWNER: f"{sys.executable} -S {script} {marker}"}, reaper)
    bare.start()
    return bare, marker


def _started(marker: Path) -> tuple[int, float] | None:
    try:
        pid, when = marker.read_text().split()
        return int(pid), float(when)
    except (OSError, ValueError):
        return None


def bare_restart(bare: BareSupervisor, marker: Path) -> float:
    """signalProcess(USR1) -> the respawned program wrote its file, seconds (only the
    file is watched afterwards: no XML-RPC call wakes supervisord's loop)."""
    wait_for(lambda: bare.all_in("RUNNING"), 60, "the bare program RUNNING", 0.05)
    old = _started(marker)
    t0 = time.time()
    bare.rpc.signalProcess(RESPAWNER, "USR1")

    def respawned() -> float | None:
        now = _started(marker)
        return now[1] if now and now != old and now[1] >= t0 else None

    return float(wait_for(respawned, 30, "the bare program's respawn", 0.003)) - t0


def single_restarts(
    fleet: BenchFleet, name: str, reps: int, root: Path, reaper: Reaper
) -> dict[str, list[float]]:
    """trigger -> first poll of the new process, seconds, per variant (interleaved with
    the bare respawn baseline); and under "spawn:<variant>", trigger -> new process."""
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    samples.update({f"spawn:{v}": [] for v in VARIANTS})
    samples[RESPAWNER] = []
    bare, marker = bare_respawner(root, reaper)
    try:
        for _ in range(reps):
            samples[RESPAWNER].append(bare_restart(bare, marker))
            _one_round(fleet, name, samples)
    finally:
        bare.close()
    return samples


def _one_round(fleet: BenchFleet, name: str, samples: dict[str, list[float]]) -> None:
    for variant, trigger in VARIANTS.items():
        # Past startsecs: an agent asked to exit while STARTING ends in BACKOFF.
        fleet.wait_ready([name], timeout=60)
        old = fleet.status(name) or {}
        t0 = time.time()
        trigger(fleet, name)
        first = fleet.first_poll_after(name, int(old.get("pid") or 0), t0)
        samples[variant].append(first - t0)
        new_pid = int((fleet.status(name) or {}).get("pid") or 0)
        spawned = process_start_time(new_pid)  # to a clock tick, unlike psutil's
        if spawned is not None:
            samples[f"spawn:{variant}"].append(spawned - t0)


SAFE_CLI = {  # variant -> label; compared with `supervisorctl restart` (a CLI too)
    "cli-signal": "Idle safe restart, `tf-fleet restart --safe NAME --method signal`, CLI",
    "cli-file": "Idle safe restart, `tf-fleet restart --safe NAME --method file`, CLI",
}
SAFE_DIRECT = {  # variant -> label; compared with the bare respawned program
    "trigger-signal": "Idle restart asked straight of the agent: XML-RPC signalProcess(USR1)",
    "trigger-file": "Idle restart asked straight of the agent: create the restart file",
}


def restart_rows(samples: dict[str, list[float]]) -> list[Row]:
    hard = samples["hard-ctl"]
    floor = samples[RESPAWNER]
    rows = [
        sampled(
            "Hard restart, `supervisorctl restart NAME` (a CLI too) → first poll",
            hard,
            "s",
            note=f"baseline; {_spawn(samples, 'hard-ctl')}",
        ),
        sampled(
            "Bare program: signalProcess(USR1) → exits 1 → respawned by supervisord → "
            "wrote its file",
            floor,
            "s",
            note="baseline: supervisord's own respawn pace (startsecs 1)",
        ),
    ]
    for variant, label in SAFE_CLI.items():
        row = sampled(
            f"{label} → first poll",
            samples[variant],
            "s",
            hard,
            "supervisorctl restart",
            note=_spawn(samples, variant),
        )
        rows.append(ratio_target(row, 1.3))
    for variant, label in SAFE_DIRECT.items():
        row = sampled(
            f"{label} → first poll",
            samples[variant],
            "s",
            floor,
            "bare exit 1 → respawn",
            note=_spawn(samples, variant),
        )
        rows.append(ratio_target(row, 1.2))
    return rows


def _spawn(samples: dict[str, list[float]], variant: str) -> str:
    spawn = samples.get(f"spawn:{variant}")
    if not spawn:
        return ""
    rest = median(samples[variant]) - median(spawn)
    return (
        f"new process created {median(spawn):.3f} s after the trigger (median; "
        f"p95 {pct(spawn, 95):.3f} s), first poll {rest:.3f} s later"
    )


def bare_roll(bare: BareSupervisor, parallel: int) -> float:
    """The minimal roll over XML-RPC: stop `parallel` programs, wait until STOPPED, start
    them, wait until RUNNING (past startsecs), next batch; seconds."""
    t0 = time.perf_counter()
    for i in range(0, len(bare.names), parallel):
        batch = bare.names[i : i + parallel]
        for name in batch:
            bare.rpc.stopProcess(name, False)
        wait_for(partial(bare.all_in, "STOPPED", batch), 60, "a batch STOPPED", 0.05)
        for name in batch:
            bare.rpc.startProcess(name, False)
        wait_for(partial(bare.all_in, "RUNNING", batch), 60, "a batch RUNNING", 0.05)
    return time.perf_counter() - t0


def rolling_rows(
    fleet: BenchFleet, root: Path, reaper: Reaper, parallel: int, reps: int
) -> list[Row]:
    """`restart --safe --all --max-parallel P` wall time, interleaved with the same roll
    done by a minimal XML-RPC script on as many bare sleepers."""
    count = len(fleet.names)
    bare = BareSupervisor(root, sleepers(count), reaper)
    walls: list[float] = []
    base: list[float] = []
    try:
        bare.start()
        for _ in range(reps):
            base.append(bare_roll(bare, parallel))
            fleet.wait_ready(timeout=300)
            walls.append(
                fleet.cli(
                    "restart",
                    "--safe",
                    "--all",
                    "--max-parallel",
                    str(parallel),
                    "--method",
                    "signal",
                    timeout=900,
                )
            )
    finally:
        bare.close()
    label = f"Rolling `restart --safe --all --max-parallel {parallel}`, {count} idle agents (wall)"
    return [
        sampled(
            f"Bare roll over XML-RPC, {count} sleepers, {parallel} at a time "
            "(stop, STOPPED, start, RUNNING)",
            base,
            "s",
            note="baseline; startsecs 1",
        ),
        ratio_target(sampled(label, walls, "s", base, "bare XML-RPC roll"), 1.5),
    ]
