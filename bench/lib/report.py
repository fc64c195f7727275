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

* Every figure is judged on its **p95 where it has at least 20 samples** (and the cold
  `up` and `down` on the p95 of their 3 runs, as their targets say), else on its median;
  *Samples* gives the figure's count, then its baseline's. The ratio divides the judged
  statistic by the same statistic of the baseline, both from this run. The server's p99
  row shows its p99 in the p95 column.
* A restart *asked straight of the agent* (XML-RPC signalProcess, or creating the restart
  file, then only the status file is watched) includes supervisord's respawn delay: its
  main loop waits up to 1 s in select and respawns an EXITED process only on the pass
  *after* the one that reaped it. Its baseline pays the same: a bare program that exits 1
  on SIGUSR1, is respawned by the same kind of supervisord, and writes a file as it starts.
* `tf-fleet restart --safe` of up to 10 agents asks supervisord about those agents every
  20 ms while it waits, which wakes its loop; its rows are compared with `supervisorctl
  restart` (also a CLI).
* The rolling baseline is measured, not computed: a minimal script over XML-RPC stops 10
  bare sleepers, waits until they are STOPPED, starts them, waits until they are RUNNING
  (startsecs 1, like the agents), then the next 10; the runs alternate with tf-fleet's.
* The cold `up` and `down` runs alternate with bare supervisord starting as many sleeping
  interpreters and stopping them with `supervisorctl stop all`, then `supervisorctl
  shutdown` (until supervisord is gone). `down` is the plain command (the agents are idle).
* Agent CPU to its first poll: tf-agent started with its program's own command (`python
  -S .../agent/boot.py`: no site) on the JSON config tf-fleet writes, against the fleet's
  server, under a name of its own (so it registers, as at a cold start); every thread's
  CPU time from `/proc/<pid>/task/*/schedstat` (ns) as soon as `last_poll` appears in its
  status file. Its baseline is the same venv's interpreter running `-S -c pass`, from exec
  to exit (wait4's rusage); the figure with site is in its note.
* Each baseline starts the way what it is compared with starts: the sleepers and the
  respawning bare program run `python -S`, as tf-agent's program does; `supervisorctl`
  runs from the venv's console script, as `tf-fleet` does; both supervisords are
  supervisor's own on the venv's interpreter (the bare one `python -m
  supervisor.supervisord` with its programs in one file, the fleet's through tf-fleet's
  launcher, which reads its one file per program in linear time and lets a pass's
  programs run once it has forked them all: the bare one starts each sleeper as it forks
  it). The memory rows note a sleeper with site beside them.
* `supervisorctl status` and `supervisorctl restart` ask the fleet's own supervisord,
  which loads tf-fleet's plugin (`[rpcinterface:tffleet]`): it sends 64 KB per pass of
  its main loop instead of 4 KB, which makes `supervisorctl status` faster too. The bare
  supervisords run without it.
* The job runs all seven phases: `allocate` waits (upstream semantics) until the job or its
  parent job ends, so each measured job names an already completed job as
  `parent_job_id`, which lets allocate return at once.
* Idle CPU is the mean over all agents (total CPU / agents / window): one agent's CPU time
  moves in 10 ms ticks, too coarse for a single-agent figure.
* The host is shared: the load average above says how busy the cores were.
"""

HEADER = (
    "Figure",
    "Median",
    "p95",
    "Baseline (same run)",
    "Ratio",
    "Target",
    "Met?",
    "Samples",
    "Notes",
)


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
        tail = _num(row.p95, row.unit)
        if row.judged == "p99":
            tail = "p99 " + tail
        samples = str(row.n) + (f" / {row.baseline_n}" if row.baseline_n else "")
        cells = (
            row.figure,
            _num(row.value, row.unit),
            tail,
            baseline,
            ratio,
            row.target or "—",
            met,
            samples,
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


FAULTS_START, FAULTS_END = "<!-- faults:start -->", "<!-- faults:end -->"


def kept_faults_section(path: Path) -> str:
    """bench/faults.py's section (between its markers), kept as it is."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    start, end = text.find(FAULTS_START), text.find(FAULTS_END)
    if start < 0 or end < start:
        return ""
    return text[start : end + len(FAULTS_END)]


def write(
    path: Path,
    rows: list[Row],
    mode: str,
    elapsed: float,
    command: str,
    errors: list[str],
    remarks: list[str] | None = None,
    subject: str = "",
    sections: list[str] | None = None,
) -> None:
    faults = kept_faults_section(path)
    missed = [r for r in rows if r.met is False]
    parts = [
        "# tf-fleet bench results",
        "",
        f"Written by `{command}` ({mode} run, {elapsed:.0f} s) on "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}.",
        "",
        f"Machine: {machine()}.",
        "",
        f"Measured: {subject or 'the installed tf-fleet'}; every baseline runs that venv's"
        " interpreter, started the way the process it is compared with starts (the table"
        " says how).",
        "",
        "Every figure and its baseline were measured in the same run, on loopback, in a "
        "private temp state dir. Latencies to a *first poll* are from just before the "
        "trigger to the `last_poll` the new process wrote in `<state>/run/<name>.json`. "
        "Agents and baselines use `startsecs: 1`.",
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
    if remarks:
        parts += [""] + [f"* {r}" for r in remarks]
    for text in sections or []:
        parts += ["", text]
    parts += ["", NOTES.rstrip()]
    parts += [
        "",
        "Reproduce: `.venv/bin/python bench/run.py` (full: 200 and 500 agents, under 20 "
        "min) or `--quick` (under 3 min); `--agents N[,M]` sets the fleet sizes.",
        "",
    ]
    if faults:
        parts += [faults, ""]
    path.write_text("\n".join(parts))
