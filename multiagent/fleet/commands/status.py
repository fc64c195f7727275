"""The merged per-agent view: supervisord's process info joined with the agent's status file."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from multiagent.fleet.host import installed
from multiagent.fleet.host.files import read_text
from multiagent.fleet.host.logs import ended_unannounced, tail_lines
from multiagent.fleet.host.statusfile import read_status
from multiagent.fleet.host.triggers import read_drain
from multiagent.fleet.model.facts import ProcessInfo, ProcessState, StatusRead, judge
from multiagent.fleet.model.fleetfile import Fleet, ProgramKind
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.supervisord.client import Faults, Supervisor, SupervisorError
from multiagent.vocabulary import STATUS_STALE_SECONDS, AgentState, DrainMode, Phase

# How long an agent that crashed and was started again counts as failed: long enough for
# a cron'd `status --format prometheus` to see it between two crashes of a loop.
CRASH_WINDOW = 300.0


@dataclass(frozen=True)
class AgentStatus:
    name: str
    process: str | None  # supervisord state; None when supervisord does not know it
    pid: int | None
    uptime_s: float | None
    state: str | None
    job_id: str | None
    phase: str | None
    restart_pending: bool | None
    last_poll: float | None
    drained: bool | None = None
    drain_flag: str | None = None  # "drain" or "hold" (held down until `up` swaps it)
    log_tail: tuple[str, ...] = ()
    # Why nothing is known of what the running process does (its status file cannot
    # be trusted); such an agent counts as busy.
    unknown: str | None = None
    # Down although the fleet wants it running (no hold): `up` starts it again.
    down_unwanted: bool = False
    # Left behind by an upgrade in place (model/staleness.py): its entry names files that
    # are gone (it cannot start again), or it runs older code than is installed.
    entry_stale: str | None = None
    code_changed: str | None = None
    # Started again after a crash within CRASH_WINDOW: a crash loop shows as RUNNING.
    crashed: str | None = None

    @property
    def held_down(self) -> bool:
        """Exited on a hold (a change `up --no-wait` asked for, its swap still to do): it
        stays down until `tf-fleet up` swaps it."""
        return self.process in ProcessState.DOWN and self.drain_flag == DrainMode.HOLD

    @property
    def failed(self) -> bool:
        """Needs a person: it failed, is down (unwanted, or held for a swap nobody is
        doing), or has long been unknown."""
        settled = (self.uptime_s or 0) > STATUS_STALE_SECONDS
        return (
            self.process in ProcessState.FAILED
            or self.down_unwanted
            or self.held_down
            or bool(self.entry_stale)
            or bool(self.crashed)
            or bool(self.unknown and settled)
        )

    @property
    def busy(self) -> bool:
        return bool(self.job_id) or self.state in Phase.ALL or bool(self.unknown)

    def to_json(self) -> dict[str, Any]:
        # Each field holds a plain value but log_tail: asdict's deep copy of each one was
        # a quarter of `status --json` at 500 agents.
        data = {name: getattr(self, name) for name in _ROW_FIELDS}
        data["log_tail"] = list(self.log_tail)
        return data


_ROW_FIELDS = tuple(f.name for f in fields(AgentStatus))


def agent_status(
    name: str,
    info: ProcessInfo | None,
    status_file: StatusRead | None,
    log_file: Path | None = None,
    tail: int = 5,
    drain_flag: str | None = None,
    now: float | None = None,
) -> AgentStatus:
    """Join one agent's process info and status file (None: the agent writes none); a
    file counts only if the running process wrote it recently, or, with no process
    running, it tells how the last one ended."""
    now = time.time() if now is None else now
    process = info.state if info else None
    live = (
        info is not None
        and info.state in (ProcessState.RUNNING, ProcessState.STARTING)
        and info.pid
    )
    pid = info.pid if info and info.pid else None
    current, why = judge(status_file, pid, now) if status_file else (None, "")
    log_tail: tuple[str, ...] = ()
    if info and info.state in ProcessState.FAILED:
        source = Path(info.log_file) if info.log_file else log_file
        lines = tail_lines(source, tail) if source else []
        if info.spawnerr:
            lines.append(f"supervisord: {info.spawnerr}")
        log_tail = tuple(lines)

    def field(key: str) -> Any:
        return current.get(key) if current else None

    return AgentStatus(
        name=name,
        process=process,
        pid=pid,
        uptime_s=info.uptime if info else None,
        state=field("state"),
        job_id=field("job_id"),
        phase=field("phase"),
        restart_pending=field("restart_pending"),
        last_poll=field("last_poll"),
        drained=field("drained"),
        drain_flag=drain_flag,
        log_tail=log_tail,
        unknown=why if live and status_file and current is None else None,
        down_unwanted=bool(
            info and info.state in ProcessState.DOWN and drain_flag != DrainMode.HOLD
        ),
        crashed=_crashed(info, log_file) if status_file else None,
    )


def _crashed(info: ProcessInfo | None, log_file: Path | None) -> str | None:
    """How a tf-agent running again after a crash within CRASH_WINDOW came to be: its
    previous process ended without logging its exit, and supervisord started this one.
    A crash loop of a build that lives past startsecs never ends FATAL: this shows it, at
    every look, also while supervisord starts it once more (STARTING)."""
    if info is None or info.state not in ProcessState.LIVE or not info.stop or not log_file:
        return None
    since = max(0.0, info.now - info.start) if info.start else 0.0
    if since > CRASH_WINDOW or not ended_unannounced(tail_lines(log_file, 400), info.pid):
        return None
    return (
        f"its previous process ended without exiting (killed or crashed); supervisord"
        f" started it again {since:.0f} s ago"
    )


@dataclass(frozen=True)
class AgentFiles:
    """What an agent's own files say, read before supervisord's answer is needed."""

    status: StatusRead | None  # tf-agents only
    drain_flag: str | None
    program_text: str | None  # its program file as supervisord would load it


def read_agent_files(
    names: list[str],
    layout: Layout,
    kinds: dict[str, str],
    supervisor: Supervisor,
    read: Mapping[Path, str | None] | None = None,
) -> dict[str, AgentFiles]:
    """`read`: files whose text was read a moment ago (a reused rendering's)."""
    read = read or {}
    programs = {name: supervisor.target.program_file(name) for name in names}
    return {
        name: AgentFiles(
            read_status(layout.status_file(name))
            if kinds.get(name) == ProgramKind.TF_AGENT
            else None,
            read_drain(layout, name),
            read[path] if (path := programs[name]) in read else read_text(path),
        )
        for name in names
    }


def fleet_status(
    names: list[str],
    processes: dict[str, ProcessInfo],
    layout: Layout,
    files: dict[str, AgentFiles],
) -> list[AgentStatus]:
    now = time.time()
    return [
        agent_status(
            name,
            processes.get(name),
            files[name].status,
            layout.log_file(name),
            drain_flag=files[name].drain_flag,
            now=now,
        )
        for name in names
    ]


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600:02d}h"


def format_table(rows: list[AgentStatus], now: float | None = None) -> str:
    now = time.time() if now is None else now
    header = ("NAME", "PROCESS", "PID", "UPTIME", "STATE", "JOB", "RESTART", "LAST POLL")
    table = [header]
    for row in rows:
        state = row.state or "-"
        if row.phase and row.phase != row.state:
            state = f"{state}/{row.phase}"
        if row.unknown:
            state = "unknown"
        if row.drain_flag == DrainMode.HOLD:
            state += " (held: `up` finishes its change)"
        elif row.drain_flag and row.state != AgentState.DRAINED:
            state += " (draining)"
        elif row.down_unwanted:
            state += " (down: `tf-fleet up` starts it)"
        table.append(
            (
                row.name,
                row.process or "not loaded",
                str(row.pid or "-"),
                format_age(row.uptime_s),
                state,
                row.job_id or "-",
                "pending" if row.restart_pending else "-",
                format_age(now - row.last_poll) + " ago" if row.last_poll else "-",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table
    ]
    return "\n".join(lines + _notes(rows))


def _notes(rows: list[AgentStatus]) -> list[str]:
    """What the table's rows cannot say: why an agent counts as busy or needs a person."""
    lines: list[str] = []
    for row in rows:
        if row.unknown:
            lines.append(f"--- {row.name}: counted as busy, {row.unknown}")
        for left_behind in (row.entry_stale, row.code_changed):
            if left_behind:
                lines.append(
                    f"--- {row.name}: {left_behind}; `tf-fleet up` puts it on the installed"
                    " tf-fleet after its job"
                )
        if row.crashed:
            lines.append(f"--- {row.name}: {row.crashed} (`tf-fleet logs {row.name}`)")
        if row.held_down:
            lines.append(
                f"--- {row.name}: down, held for a change not applied yet; `tf-fleet up`"
                " applies it and starts the agent"
            )
        if row.log_tail:
            lines.append(f"--- {row.name} is {row.process}; last lines of its log:")
            lines.extend(f"    {line}" for line in row.log_tail)
    return lines


@dataclass(frozen=True)
class ServerStatus:
    """The agents' server: whether it answers and, when embedded, its program."""

    url: str
    reachable: bool
    detail: str  # "HTTP 200 in 3 ms" or why not
    program: str | None = None  # the embedded server's program name
    process: str | None = None
    pid: int | None = None
    uptime_s: float | None = None
    cause: str | None = None  # why the embedded server is down, in one line

    @property
    def failed(self) -> bool:
        """The fleet's own server is down (a remote one out of reach is only shown)."""
        return self.program is not None and self.process != ProcessState.RUNNING

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def headline(self) -> str:
        where = f"server {self.url}: {'reachable' if self.reachable else 'NOT reachable'}"
        where += f" ({self.detail})"
        if self.program:
            where += f"; {self.program} {self.process or 'not loaded'}"
            if self.pid:
                where += f", pid {self.pid}, up {format_age(self.uptime_s)}"
        if self.cause:
            where += f": {self.cause}"
        return where


def server_status(fleet: Fleet, layout: Layout, processes: dict[str, ProcessInfo]) -> ServerStatus:
    from multiagent.fleet.serverinfo import probe
    from multiagent.server.ports import port_holder

    server = fleet.server
    seen = probe(server.url)
    if not server.embedded:
        return ServerStatus(server.url, seen.ok, seen.text)
    name = fleet.server_program
    info = processes.get(name)
    cause = None
    if info is None or info.state != ProcessState.RUNNING:
        holder = port_holder(server.host, server.port)
        lines = tail_lines(layout.log_file(name), 1)
        if holder and not (info and info.pid):
            cause = f"port {server.port} is in use by {holder}"
        elif lines:
            cause = lines[-1]
    return ServerStatus(
        server.url,
        seen.ok,
        seen.text,
        name,
        info.state if info else None,
        info.pid if info and info.pid else None,
        info.uptime if info else None,
        cause,
    )


def with_server_view(
    rows: list[AgentStatus], kinds: dict[str, str], known: dict[str, dict[str, Any]]
) -> list[AgentStatus]:
    """Upstream agents write no status file: their state, job and phase as their server
    has them (one request for the whole fleet)."""
    out = []
    for row in rows:
        record = known.get(row.name) if kinds.get(row.name) == ProgramKind.UPSTREAM else None
        if record and row.process in (ProcessState.RUNNING, ProcessState.STARTING):
            state = record.get("state") if isinstance(record.get("state"), str) else None
            job = record.get("job_id") if isinstance(record.get("job_id"), str) else None
            phase = state if state in Phase.ALL else None
            row = replace(row, state=state, job_id=job or None, phase=phase)
        out.append(row)
    return out


def without_server_view(
    rows: list[AgentStatus], kinds: dict[str, str], why: str
) -> list[AgentStatus]:
    """Upstream agents whose server cannot be asked: nothing proves them idle (unknown is
    busy)."""
    live = (ProcessState.RUNNING, ProcessState.STARTING)
    return [
        replace(row, unknown=f"its server cannot say whether it runs a job ({why})")
        if kinds.get(row.name) == ProgramKind.UPSTREAM and row.process in live
        else row
        for row in rows
    ]


def with_upgrade_view(
    rows: list[AgentStatus], layout: Layout, files: dict[str, AgentFiles]
) -> list[AgentStatus]:
    """Each agent an upgrade in place left behind, and how (its program file as loaded)."""
    out = []
    for row in rows:
        text = files[row.name].program_text
        live = row.process in ProcessState.LIVE
        changed = (
            installed.code_changed(
                layout, row.name, text, row.pid, time.time() - (row.uptime_s or 0)
            )
            if live
            else None
        )
        out.append(replace(row, entry_stale=installed.entry_stale(text), code_changed=changed))
    return out


def look(
    fleet: Fleet,
    supervisor: Supervisor,
    names: list[str],
    *,
    without_supervisord: bool = False,
    read: Mapping[Path, str | None] | None = None,
) -> tuple[bool, list[AgentStatus], ServerStatus, str | None, dict[str, ProcessInfo]]:
    """Whether supervisord answers, the status of each of `names` (agents of the fleet),
    the server's, and a note when the server would not list its agents. With
    `without_supervisord`, a supervisord that does not answer is a note, not an error:
    what the fleet's own files and server say is still shown. `read`: files whose text
    was read a moment ago."""
    from multiagent.fleet.serverinfo import server_agents

    layout = Layout(fleet.state_dir)
    note = None
    kinds = {name: fleet.agents[name].kind for name in names}
    supervisor.ask_ahead()  # supervisord builds its answer while the files are read
    files = read_agent_files(names, layout, kinds, supervisor, read)
    try:
        running = supervisor.is_running()
        processes = supervisor.processes() if running else {}
    except SupervisorError as exc:
        if not (without_supervisord and exc.code == Faults.UNRESPONSIVE):
            raise
        running, processes, note = False, {}, f"error: {exc}"
    rows = with_upgrade_view(fleet_status(names, processes, layout, files), layout, files)
    if ProgramKind.UPSTREAM in kinds.values():
        known = server_agents(fleet.server.url)
        if isinstance(known, str):
            note = "; ".join(filter(None, [note, f"upstream agents' state unknown: {known}"]))
            rows = without_server_view(rows, kinds, known)
        else:
            rows = with_server_view(rows, kinds, known)
    return running, rows, server_status(fleet, layout, processes), note, processes
