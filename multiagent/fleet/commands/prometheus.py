"""The fleet for Prometheus: the file-based service discovery file of the tf-agents'
/metrics, and `status --format prometheus` (gauges in the text exposition format, for
node_exporter's textfile collector).

Both are pure (a Fleet or status rows in, text out); `write_targets` alone touches disk.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multiagent.fleet.model.facts import ProcessState
from multiagent.vocabulary import Phase

if TYPE_CHECKING:
    from multiagent.fleet.commands.status import AgentStatus, ServerStatus
    from multiagent.fleet.host.rejected import Rejection
    from multiagent.fleet.model.fleetfile import Fleet
    from multiagent.fleet.model.layout import Layout

PREFIX = "tf_fleet_"
# supervisord's process states, and ours for a program it does not know.
PROCESS_STATES = ProcessState.ALL
NOT_LOADED = "NOT_LOADED"
WILDCARD_HOSTS = ("0.0.0.0", "::")

# name (without the prefix) -> help text; every one is a gauge.
FLEET_GAUGES = {
    "supervisord_up": "1 when the fleet's supervisord answers.",
    "server_reachable": "1 when the agents' server answers its health check.",
    "server_up": "1 when the embedded server's program is RUNNING (embedded servers only).",
    "agents": "Agents shown.",
    "change_rejected": "1 while `up` refuses the fleet file's change: a canary rejected it.",
    "change_rejected_timestamp_seconds": "When a canary rejected the change `up` refuses.",
}
AGENT_GAUGES = {
    "agent_up": "1 when the agent's program is RUNNING.",
    "agent_process_state": "1 for the agent program's supervisord state, 0 for the others.",
    "agent_busy": "1 while the agent runs a job, or when what it does is unknown.",
    "agent_status_unknown": "1 when the agent's status file cannot be trusted (counted busy).",
    "agent_phase": "1 for the phase the agent's job is in, 0 for the others.",
    "agent_restart_pending": "1 when a safe restart waits for the job to end.",
    "agent_drained": "1 when the agent is drained (takes no new job).",
    "agent_draining": "1 when a drain flag is set (drain, or hold while `up` swaps it).",
    "agent_failed": (
        "1 when the agent needs a person (FATAL, BACKOFF, a recent crash, down unwanted or held)."
    ),
    "agent_last_poll_age_seconds": "Seconds since the agent last polled its server.",
    "agent_uptime_seconds": "Seconds since the agent's process started (RUNNING only).",
}
METRIC_NAMES = tuple(PREFIX + name for name in (*FLEET_GAUGES, *AGENT_GAUGES))


# -- service discovery ------------------------------------------------------------
def targets(fleet: Fleet, hostname: str) -> list[dict[str, Any]]:
    """One file_sd entry per tf-agent with a metrics port, labelled with its agent name,
    its queues (comma-joined), its location (when set), this host's name and the fleet's
    label."""
    metrics = fleet.metrics
    if metrics is None:
        return []
    address = hostname if metrics.host in WILDCARD_HOSTS else metrics.address
    entries = []
    for name, port in sorted(metrics.ports.items()):
        upstream = fleet.agents[name].upstream
        labels = {
            "agent": name,
            "queues": ",".join(str(q) for q in upstream.get("job_queues") or ()),
            "host": hostname,
            "fleet": fleet_label(fleet),
        }
        if upstream.get("location") not in (None, ""):
            labels["location"] = str(upstream["location"])
        entries.append({"targets": [f"{address}:{port}"], "labels": labels})
    return entries


def targets_text(fleet: Fleet, hostname: str) -> str:
    return json.dumps(targets(fleet, hostname), indent=2) + "\n"


def write_targets(fleet: Fleet, layout: Layout) -> list[Path]:
    """Write <state>/prometheus/targets.json if it changed (atomically, 0644: Prometheus
    reads it); a fleet without `metrics:` empties one left from before. Returns what
    was written."""
    import os
    import socket

    from multiagent.fleet.host.files import PUBLIC, write_if_changed

    path = layout.prometheus_targets
    if fleet.metrics is None and not os.path.lexists(path):
        return []
    text = targets_text(fleet, socket.gethostname())
    return [path] if write_if_changed(path, text, PUBLIC) else []


# -- status as gauges -------------------------------------------------------------
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: dict[str, str]) -> str:
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in pairs.items())
    return f"{{{inner}}}" if inner else ""


def _value(value: float | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


Sample = tuple[dict[str, str], "float | bool"]


def _family(name: str, help_text: str, samples: Iterable[Sample]) -> list[str]:
    full = PREFIX + name
    lines = [f"# HELP {full} {help_text}", f"# TYPE {full} gauge"]
    lines += [f"{full}{_labels(labels)} {_value(value)}" for labels, value in samples]
    return lines


def fleet_label(fleet: Fleet) -> str:
    """The `fleet` label of every series: the fleet file's `name:`, else its state dir
    (one per fleet on a host, so two fleets' files coexist in one textfile collector)."""
    return fleet.name or str(fleet.state_dir)


def _agent_samples(row: AgentStatus, now: float, fleet: dict[str, str]) -> dict[str, list[Sample]]:
    """Each agent gauge's samples for one agent (an unknown value has none)."""
    agent = {**fleet, "agent": row.name}
    process = row.process or NOT_LOADED
    phase = row.phase or (row.state if row.state in Phase.ALL else None)
    samples: dict[str, list[Sample]] = {
        "agent_up": [(agent, row.process == ProcessState.RUNNING)],
        "agent_process_state": [
            ({**agent, "state": state}, state == process) for state in (*PROCESS_STATES, NOT_LOADED)
        ],
        "agent_busy": [(agent, row.busy)],
        "agent_status_unknown": [(agent, bool(row.unknown))],
        "agent_phase": [({**agent, "phase": p}, p == phase) for p in Phase.ALL],
        "agent_restart_pending": [(agent, bool(row.restart_pending))],
        "agent_drained": [(agent, bool(row.drained))],
        "agent_draining": [(agent, bool(row.drain_flag))],
        "agent_failed": [(agent, row.failed)],
        "agent_last_poll_age_seconds": [],
        "agent_uptime_seconds": [],
    }
    if row.last_poll is not None:
        samples["agent_last_poll_age_seconds"].append((agent, max(0.0, now - row.last_poll)))
    if row.uptime_s is not None:
        samples["agent_uptime_seconds"].append((agent, float(row.uptime_s)))
    return samples


def status_text(
    supervisord_up: bool,
    rows: Sequence[AgentStatus],
    server: ServerStatus,
    now: float,
    fleet: str,
    host: str,
    rejection: Rejection | None = None,
) -> str:
    """What `tf-fleet status` knows, as Prometheus gauges (text exposition format 0.0.4),
    every series labelled with its `host` and `fleet` (as the agents' targets are)."""
    own = {"host": host, "fleet": fleet}
    url = {**own, "url": server.url}
    gauges: dict[str, list[Sample]] = {
        "supervisord_up": [(own, supervisord_up)],
        "server_reachable": [(url, server.reachable)],
        "server_up": [(url, server.process == ProcessState.RUNNING)] if server.program else [],
        "agents": [(own, len(rows))],
        "change_rejected": [(own, rejection is not None)],
        "change_rejected_timestamp_seconds": [(own, rejection.when)] if rejection else [],
    }
    lines: list[str] = []
    for name, help_text in FLEET_GAUGES.items():
        lines += _family(name, help_text, gauges[name])
    per_agent = [_agent_samples(row, now, own) for row in rows]
    for name, help_text in AGENT_GAUGES.items():
        lines += _family(name, help_text, (s for samples in per_agent for s in samples[name]))
    return "\n".join(lines) + "\n"
