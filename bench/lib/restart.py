"""Figures 1 and 2: idle safe restart (CLI and bare trigger) against a hard restart, and
rolling restarts of the whole fleet."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from multiagent.procinfo import process_start_time

from .common import Row, absolute_target, median, pct, ratio_target, timed_run
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


def _hard(fleet: BenchFleet, name: str) -> None:
    fleet.rpc.stopProcess(name, True)
    fleet.rpc.startProcess(name, False)


def _hard_ctl(fleet: BenchFleet, name: str) -> None:
    timed_run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(fleet.conf), "restart", name],
        timeout=60,
    )


VARIANTS: dict[str, Trigger] = {
    "cli-signal": _cli("signal"),
    "cli-file": _cli("file"),
    "hard-ctl": _hard_ctl,
    "trigger-signal": _signal,
    "trigger-file": _file,
    "hard": _hard,
}


def single_restarts(fleet: BenchFleet, name: str, reps: int) -> dict[str, list[float]]:
    """trigger -> first poll of the new process, seconds, per variant (interleaved); and
    under "spawn:<variant>", trigger -> the new process was created."""
    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    samples.update({f"spawn:{v}": [] for v in VARIANTS})
    for _ in range(reps):
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
    return samples


BASELINES = {
    "hard-ctl": (
        "Hard restart, `supervisorctl restart NAME` (a CLI too) → first poll",
        "supervisorctl restart",
    ),
    "hard": (
        "Hard restart, XML-RPC stopProcess+startProcess (no CLI) → first poll",
        "XML-RPC hard restart",
    ),
}
SAFE = {  # variant -> (label, the baseline it is compared with)
    "cli-signal": (
        "Idle safe restart, `tf-fleet restart --safe NAME --method signal`, CLI end-to-end",
        "hard-ctl",
    ),
    "cli-file": (
        "Idle safe restart, `tf-fleet restart --safe NAME --method file`, CLI end-to-end",
        "hard-ctl",
    ),
    "trigger-signal": (
        "Idle safe restart, trigger only: XML-RPC signalProcess(NAME, USR1)",
        "hard",
    ),
    "trigger-file": ("Idle safe restart, trigger only: create the restart file", "hard"),
}


def restart_rows(samples: dict[str, list[float]], reps: int) -> list[Row]:
    rows = []
    for variant, (label, _) in BASELINES.items():
        rows.append(
            Row(
                label,
                median(samples[variant]),
                "s",
                pct(samples[variant], 95),
                note=f"baseline; median of {reps}; {_spawn(samples, variant)}",
            )
        )
    for variant, (label, base) in SAFE.items():
        row = Row(
            f"{label} → first poll",
            median(samples[variant]),
            "s",
            pct(samples[variant], 95),
            baseline=median(samples[base]),
            baseline_text=BASELINES[base][1],
            note=f"median of {reps}; {_spawn(samples, variant)}",
        )
        rows.append(ratio_target(row, 1.3))
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


def rolling_rows(
    fleet: BenchFleet, single: float, parallels: tuple[int, ...], reps: int = 1
) -> list[Row]:
    """`restart --safe --all` wall time; baseline: one agent's latency x N / parallelism."""
    count = len(fleet.names)
    rows = []
    for parallel in parallels:
        walls = []
        for _ in range(reps):
            fleet.wait_ready(timeout=180)
            walls.append(
                fleet.cli(
                    "restart",
                    "--safe",
                    "--all",
                    "--max-parallel",
                    str(parallel),
                    "--method",
                    "signal",
                    timeout=600,
                )
            )
        row = Row(
            f"Rolling `restart --safe --all`, {count} idle agents, --max-parallel "
            f"{parallel} (wall)",
            median(walls),
            "s",
            baseline=single * count / parallel,
            baseline_text=f"CLI-signal single restart × {count} / {parallel}",
            note=f"{'median of ' + str(reps) if reps > 1 else 'one run'}",
        )
        if parallel == 10 and count == 50:
            absolute_target(row, 8.0)
        elif parallel == 10:
            row.target = f"≤ 8 s at 50 agents (not judged at {count})"
        rows.append(row)
    return rows
