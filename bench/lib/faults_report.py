"""What the fault soak found, from the server's own data, and its section of RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiagent.vocabulary import PhaseStatus

from .faults_fleet import Cmd
from .faults_inject import KILLS_AGENT, KINDS, STOPS_AGENT, Fault
from .faults_proc import SamplerReport

AGENT_ERROR = PhaseStatus.AGENT_ERROR  # tf-agent failed itself in that phase
FINAL = ("complete", "completed", "cancelled")
START = re.compile(r"TFB-START job=(\S+) agent=(\S+) pid=(\d+) at=(\S+)")
BEGIN, END = "<!-- faults:start -->", "<!-- faults:end -->"


@dataclass
class Findings:
    submitted: list[str] = field(default_factory=list)
    clean: list[str] = field(default_factory=list)
    agent_error: dict[str, str] = field(default_factory=dict)  # job -> the fault that hit it
    agent_error_unhit: dict[str, str] = field(default_factory=dict)
    otherwise: dict[str, str] = field(default_factory=dict)  # job -> reason
    stuck: dict[str, str] = field(default_factory=dict)  # job -> state, agent
    never_started: list[str] = field(default_factory=list)
    twice: dict[str, str] = field(default_factory=dict)
    closed_in_grace: list[str] = field(default_factory=list)


def statuses(result: dict[str, Any]) -> dict[str, int]:
    status = result.get("status") or {}
    return {k: v for k, v in status.items() if isinstance(v, int)}


def hits(job: str, faults: list[Fault], kinds: tuple[str, ...] | None = None) -> list[Fault]:
    return [f for f in faults if job in f.affected_jobs() and (kinds is None or f.kind in kinds)]


def describe(fault: Fault, job: str) -> str:
    agent = next((a for a, jobs in fault.running.items() if job in jobs), fault.target)
    return f"fault {fault.number} ({fault.kind}) at {fault.at:.1f} s on {agent}"


def analyse(
    submitted: list[str],
    jobs: dict[str, dict[str, Any]],
    logs: dict[str, str],
    ledger: str,
    faults: list[Fault],
) -> Findings:
    found = Findings(submitted=list(submitted))
    for job in submitted:
        row = jobs.get(job) or {"state": "missing", "agent": None, "result": {}}
        _classify(found, job, row, faults)
        _twice(found, job, row, logs.get(job, ""), ledger)
    return found


def _classify(found: Findings, job: str, row: dict[str, Any], faults: list[Fault]) -> None:
    state, codes = row["state"], statuses(row["result"])
    if state == "waiting":
        found.never_started.append(job)
    elif state not in FINAL:
        found.stuck[job] = f"state {state} on {row['agent']}"
    elif AGENT_ERROR in codes.values():
        hit = hits(job, faults, KILLS_AGENT)
        phases = ", ".join(p for p, c in codes.items() if c == AGENT_ERROR)
        if hit:
            found.agent_error[job] = f"{phases}: {describe(hit[0], job)}"
        else:
            others = "; ".join(describe(f, job) for f in hits(job, faults)) or "no fault"
            found.agent_error_unhit[job] = f"{phases} on {row['agent']}; running during: {others}"
    elif state in ("complete", "completed") and codes and all(c == 0 for c in codes.values()):
        found.clean.append(job)
    else:
        hit = hits(job, faults, STOPS_AGENT) or hits(job, faults)
        why = describe(hit[0], job) if hit else "no fault hit it"
        found.otherwise[job] = f"{state}, statuses {codes or 'none'} on {row['agent']}: {why}"


def _twice(found: Findings, job: str, row: dict[str, Any], log: str, ledger: str) -> None:
    starts = {(a, p, t) for j, a, p, t in START.findall(log) if j == job}
    agents = {a for a, _, _ in starts} | ({row["agent"]} if row["agent"] else set())
    local = {tuple(line.split()[1:]) for line in ledger.splitlines() if line.startswith(job + " ")}
    if len(starts) > 1 or len(agents) > 1 or len(local) > 1:
        found.twice[job] = (
            f"server: {len(starts)} test start(s) by {sorted(agents)}; ledger: {len(local)}"
        )


@dataclass
class Run:
    command: str
    seed: int
    wall: float
    findings: Findings
    faults: list[Fault]
    sampler: SamplerReport
    orphans: dict[int, str]
    down: Cmd | None
    up_cmds: list[Cmd]
    mount_error: str | None
    error: str | None = None
    time_limit: float = 0.0


def figures(run: Run) -> list[tuple[str, str, str]]:
    f = run.findings
    s = run.sampler
    dup = sum(max(0, n - 1) for n in s.most.values())
    period = (s.seconds / s.samples * 1000) if s.samples else 0.0
    return [
        ("Jobs submitted", str(len(f.submitted)), "≥ 100 (full run)"),
        ("Jobs ending `complete`, every phase 0", str(len(f.clean)), "—"),
        (
            "Jobs ending with an agent error (a phase status 100)",
            f"{len(f.agent_error) + len(f.agent_error_unhit)}"
            f" ({len(f.agent_error_unhit)} not hit by a kill -9)",
            "each one a kill -9 hit",
        ),
        ("Jobs ending otherwise (cancelled, failed)", str(len(f.otherwise)), "listed"),
        ("Jobs stuck in a running phase at the end", str(len(f.stuck)), "0"),
        ("Jobs never started (still waiting at the end)", str(len(f.never_started)), "0"),
        ("Jobs run twice", str(len(f.twice)), "0"),
        (
            f"Duplicate agent processes seen ({s.samples} samples, one every"
            f" {period:.1f} ms, longest gap {s.max_gap * 1000:.0f} ms)",
            f"{dup} (in {s.duplicate_samples} samples)",
            "0",
        ),
        ("Orphan processes after `tf-fleet down --safe`", str(len(run.orphans)), "0"),
    ]


def passed(run: Run) -> bool:
    f = run.findings
    return not (
        f.agent_error_unhit
        or f.stuck
        or f.never_started
        or f.twice
        or run.orphans
        or run.sampler.duplicate_samples
        or run.error
    )


def _machine() -> str:
    load = os.getloadavg()[0]
    return (
        f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()},"
        f" Linux {platform.release()}; load average (1 min) at the end {load:.2f}"
    )


def render(run: Run) -> str:
    f = run.findings
    lines = [
        BEGIN,
        "## Fault soak (`bench/faults.py`)",
        "",
        f"Written by `{run.command}` (seed {run.seed}) on"
        f" {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}: wall {run.wall:.0f} s"
        f" (hard limit {run.time_limit:.0f} s). Machine: {_machine()}.",
        "",
        "Five tf-agents (`startsecs: 1`, polling every 0.5–1 s, the local connector) and the"
        " embedded server under a private supervisord, all on 127.0.0.1 in a private temp"
        " state dir whose `run/` is a 256 KiB tmpfs. Each job runs `sleep` for 2–10 s in its"
        " test phase, after an `echo` of a start marker (job, agent, shell pid, time) that"
        " reaches the server's output log; all jobs are queued at once, and a random fault"
        " (each kind once per round of seven, in a seeded random order) follows every 2–6 s"
        " until every job has ended; `restart --safe --all` and `up` with a changed config"
        " run in the background meanwhile, every other fault's command (and its wait for"
        " the process to come back) before the next gap. Figures come from the server's"
        " database, read after a bounded grace period that follows the last fault and an"
        " `up`.",
        "",
        "| Figure | Value | Must be |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in figures(run)]
    lines += ["", f"Result: **{'PASS' if passed(run) else 'FAIL'}**." + _error(run), ""]
    lines += _fault_counts(run) + _endings(f) + _problems(run) + _fault_log(run) + [END]
    return "\n".join(lines) + "\n"


def _error(run: Run) -> str:
    return f" The run itself failed: {run.error}" if run.error else ""


def _fault_counts(run: Run) -> list[str]:
    counts = Counter(f.kind for f in run.faults)
    subs = [f for f in run.faults if f.substituted]
    lines = ["Faults injected: " + ", ".join(f"{k} ×{counts.get(k, 0)}" for k in KINDS) + "."]
    if subs:
        lines.append(f"{len(subs)} substituted: " + "; ".join(s.note for s in subs[:3]))
    if run.mount_error:
        lines.append(f"The run dir tmpfs could not be mounted: {run.mount_error}.")
    return [*lines, ""]


def _endings(f: Findings) -> list[str]:
    lines: list[str] = []
    groups = (
        ("Agent-error jobs, each with the kill -9 that hit it", f.agent_error),
        ("Agent-error jobs NOT explained by a kill -9 (product bug)", f.agent_error_unhit),
        ("Jobs ending otherwise", f.otherwise),
        ("Jobs stuck in a running phase (product bug)", f.stuck),
        ("Jobs run twice (product bug)", f.twice),
        ("Jobs never started", dict.fromkeys(f.never_started, "waiting")),
    )
    for title, items in groups:
        if items:
            lines.append(f"{title}:")
            lines += [f"* `{job}`: {why}" for job, why in items.items()]
            lines.append("")
    if f.closed_in_grace:
        lines += [
            f"Jobs still open when the faults stopped and closed during the grace period:"
            f" {len(f.closed_in_grace)}.",
            "",
        ]
    return lines


def _problems(run: Run) -> list[str]:
    lines: list[str] = []
    for dup in run.sampler.duplicates[:5]:
        lines.append(f"* duplicate `{dup['name']}`: {dup['pids']} (parents {dup['ppids']})")
    for pid, cmd in list(run.orphans.items())[:10]:
        lines.append(f"* orphan pid {pid}: `{cmd[:200]}`")
    if run.down:
        lines.append(f"* the end: {run.down.short()} ({run.down.tail[:300]})")
    return [*lines, ""] if lines else []


def _fault_log(run: Run) -> list[str]:
    lines = [
        "<details><summary>Fault log</summary>",
        "",
        "| # | t (s) | Fault | Target | Jobs running on the affected agents (id prefix) |"
        " What happened |",
        "|---|---|---|---|---|---|",
    ]
    for f in run.faults:
        running = ", ".join(
            f"{a}: {' '.join(j[:8] for j in jobs)}" for a, jobs in f.running.items()
        )
        cmds = "; ".join(c.short() + (f" ({c.tail[:160]})" if c.rc else "") for c in f.commands)
        what = (f.note + ("; " if f.note and cmds else "") + cmds).replace("|", "\\|")
        lines.append(
            f"| {f.number} | {f.at:.1f} | {f.kind} | {f.target} | {running or '—'} | {what} |"
        )
    return [*lines, "", "</details>", ""]


def write_section(path: Path, section: str) -> None:
    """Replace the faults section of `path` (or append one); the rest stays as it is."""
    text = path.read_text() if path.exists() else ""
    start, end = text.find(BEGIN), text.find(END)
    if start >= 0 and end > start:
        text = text[:start] + section.rstrip("\n") + text[end + len(END) :]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    path.write_text(text if text.endswith("\n") else text + "\n")
