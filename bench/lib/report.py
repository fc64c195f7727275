"""Write RESULTS.md: one table, the machine, the date, and what is missed."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import psutil

from .common import Row

NOTES = """\
How to read it:

* *Trigger only* rows send the request straight to the agent (XML-RPC signalProcess, or
  creating the restart file) and then only watch the status file. They include
  supervisord's respawn delay: its main loop polls with a 1 s timeout and respawns an
  EXITED process only on the loop pass *after* the one that reaped it, so the new process
  is created ~1.0 s after the old one exits unless something (an XML-RPC call) wakes the
  loop. `tf-fleet restart --safe` polls supervisord every 50 ms while it waits, which hides
  that second; its rows are dominated by the CLI's own start-up instead.
* An idle agent waits on inotify over the restart dir as well as on its signal pipe, so
  the restart file wakes it as at once as SIGUSR1 does; the file method adds only the
  file's creation and the event's delivery.
* CLI rows are compared with `supervisorctl restart` (also a CLI); trigger-only rows with
  a hard restart through XML-RPC (no CLI).
* The job runs all seven phases: `allocate` waits (upstream semantics) until the job or its
  parent job ends, so each measured job names an already completed job as
  `parent_job_id`, which lets allocate return at once.
* Idle CPU is the mean over all agents (total CPU / agents / window): one agent's CPU time
  moves in 10 ms ticks, too coarse for a single-agent figure over 60 s.
* The host is shared: figures are medians of interleaved repetitions, but the load
  average above says how busy the cores were.
"""

HEADER = ("Figure", "Median", "p95", "Baseline (same run)", "Ratio", "Target", "Met?", "Notes")


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "%":
        return f"{value:.3f} %"
    if unit in ("ms", "MiB"):
        return f"{value:.1f} {unit}"
    return f"{value:.0f} {unit}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        baseline = _num(row.baseline, row.unit)
        if row.baseline is not None and row.baseline_text:
            baseline += f" ({row.baseline_text})"
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "—"
        met = "—" if row.met is None else ("yes" if row.met else "**NO**")
        cells = (
            row.figure,
            _num(row.value, row.unit),
            _num(row.p95, row.unit),
            baseline,
            ratio,
            row.target or "—",
            met,
            row.note,
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


LOAD_AT_START = os.getloadavg()


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{platform.node() or 'host'}: {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, "
        f"Python {sys.version.split()[0]}, {platform.system()} {platform.release()}; "
        f"load average (1 min) at the start {LOAD_AT_START[0]:.2f}, at the end "
        f"{load[0]:.2f}: other work on this host shares the cores"
    )


def write(
    path: Path, rows: list[Row], mode: str, elapsed: float, command: str, errors: list[str]
) -> None:
    missed = [r for r in rows if r.met is False]
    parts = [
        "# tf-fleet bench results",
        "",
        f"Written by `{command}` ({mode} run, {elapsed:.0f} s) on "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}.",
        "",
        f"Machine: {machine()}.",
        "",
        "Every figure and its baseline were measured in the same run, on loopback, in a "
        "private temp state dir. Latencies to a *first poll* are from just before the "
        "trigger to the `last_poll` the new process wrote in `<state>/run/<name>.json`. "
        "Agents and baselines use `startsecs: 1`. The package's bytecode is compiled "
        "first, as `pip install .` leaves it.",
        "",
        table(rows),
        "",
        f"Targets met: {sum(r.met is True for r in rows)} of "
        f"{sum(r.met is not None for r in rows)}.",
    ]
    if missed:
        parts += ["", "Missed: " + "; ".join(r.figure for r in missed) + "."]
    if errors:
        parts += ["", "Figures that could not be measured in this run:", ""]
        parts += [f"* {e}" for e in errors]
    parts += ["", NOTES.rstrip()]
    parts += [
        "",
        "Reproduce: `.venv/bin/python bench/run.py` (full, under 15 min) or "
        "`--quick` (under 2 min); `--agents N` caps the big-fleet figures.",
        "",
    ]
    path.write_text("\n".join(parts))
