"""Prometheus text metrics, served by the stdlib http.server in a thread (no prometheus_client).

Names and labels follow upstream's agent (`jobs_total`, `failures_total`,
`recovery_failures_total`, `phase_duration_seconds`, label `agent_id`); the rest are
tf-agent's own. Restarts show as changes of `agent_start_time_seconds` (each process sets
it once): `changes(agent_start_time_seconds[1h])`.
"""

from __future__ import annotations

import _thread
import time

from multiagent.vocabulary import PhaseStatus

TYPE_CHECKING = False  # no typing import at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any

# Upstream's phase_duration_seconds buckets.
BUCKETS = (60, 180, 300, 600, 1200, 1800, 3600, 7200, 14400)
# A whole job: setup to cleanup, reservations included.
JOB_BUCKETS = (60, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _observe(row: list[float], buckets: tuple[int, ...], seconds: float) -> None:
    """Count `seconds` into `row`: [bucket counts..., sum, count]."""
    for i, bound in enumerate(buckets):
        if seconds <= bound:
            row[i] += 1
    row[-2] += seconds
    row[-1] += 1


def _histogram(name: str, labels: str, row: list[float], buckets: tuple[int, ...]) -> list[str]:
    out = [
        f'{name}_bucket{{{labels},le="{bound}"}} {int(row[i])}' for i, bound in enumerate(buckets)
    ]
    out.append(f'{name}_bucket{{{labels},le="+Inf"}} {int(row[-1])}')
    out.append(f"{name}_sum{{{labels}}} {row[-2]:.3f}")
    out.append(f"{name}_count{{{labels}}} {int(row[-1])}")
    return out


def _head(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


class Metrics:
    def __init__(self, agent_id: str):
        self.agent = _esc(agent_id)
        self.lock = _thread.allocate_lock()  # threading only if served (start-up cost)
        self.started_at = time.time()
        self.jobs = 0
        self.failures: dict[str, int] = {}
        self.durations: dict[str, list[float]] = {}  # phase -> [bucket counts..., sum, count]
        self.job_durations = [0.0] * (len(JOB_BUCKETS) + 2)
        self.job_start: float | None = None
        self.recovery_failures = 0
        self.poll_errors: dict[str, int] = {}
        self.busy = 0
        self.restart_pending = 0

    def job_started(self) -> None:
        with self.lock:
            self.jobs += 1
            self.busy = 1
            self.job_start = time.monotonic()

    def job_done(self) -> None:
        with self.lock:
            self.busy = 0
            if self.job_start is not None:
                _observe(self.job_durations, JOB_BUCKETS, time.monotonic() - self.job_start)
                self.job_start = None

    def phase_done(self, phase: str, code: int, seconds: float) -> None:
        with self.lock:
            if code != 0:
                self.failures[phase] = self.failures.get(phase, 0) + 1
            if code == PhaseStatus.RECOVERY_FAILED:
                self.recovery_failures += 1
            row = self.durations.setdefault(phase, [0.0] * (len(BUCKETS) + 2))
            _observe(row, BUCKETS, seconds)

    def poll_error(self, reason: str) -> None:
        """A poll cycle that failed: `unreachable`, or `http_<status>` of the job poll."""
        with self.lock:
            self.poll_errors[reason] = self.poll_errors.get(reason, 0) + 1

    def render(self) -> str:
        a = f'agent_id="{self.agent}"'
        with self.lock:
            out = [
                *_head("jobs_total", "counter", "Jobs started by this agent."),
                f"jobs_total{{{a}}} {self.jobs}",
                *_head("failures_total", "counter", "Failed phases."),
            ]
            for phase, n in sorted(self.failures.items()):
                out.append(f'failures_total{{{a},test_phase="{phase}"}} {n}')
            out += [
                *_head("recovery_failures_total", "counter", "Phases that exited 46."),
                f"recovery_failures_total{{{a}}} {self.recovery_failures}",
                *_head("phase_duration_seconds", "histogram", "Phase run time."),
            ]
            for phase, row in sorted(self.durations.items()):
                out += _histogram(
                    "phase_duration_seconds", f'{a},test_phase="{phase}"', row, BUCKETS
                )
            out += _head("job_duration_seconds", "histogram", "Job run time, setup to cleanup.")
            out += _histogram("job_duration_seconds", a, self.job_durations, JOB_BUCKETS)
            out += _head("poll_errors_total", "counter", "Poll cycles that failed, by reason.")
            for reason, n in sorted(self.poll_errors.items()):
                out.append(f'poll_errors_total{{{a},reason="{_esc(reason)}"}} {n}')
            out += [
                *_head(
                    "agent_start_time_seconds",
                    "gauge",
                    "When this agent process started (Unix time); each restart changes it.",
                ),
                f"agent_start_time_seconds{{{a}}} {self.started_at:.3f}",
                *_head("agent_busy", "gauge", "1 while a job runs."),
                f"agent_busy{{{a}}} {self.busy}",
                *_head("agent_restart_pending", "gauge", "1 when a safe restart is waiting."),
                f"agent_restart_pending{{{a}}} {self.restart_pending}",
            ]
        return "\n".join(out) + "\n"

    def serve(self, port: int, host: str = "127.0.0.1") -> Any:
        # Imported only when -p is given: http.server pulls in more modules.
        import socket
        from http.server import BaseHTTPRequestHandler, HTTPServer

        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                body = metrics.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        server_class = HTTPServer
        if ":" in host:  # an IPv6 address

            class HTTPServer6(HTTPServer):
                address_family = socket.AF_INET6

            server_class = HTTPServer6
        server = server_class((host, port), Handler)
        import threading

        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 60}, name="metrics", daemon=True
        )
        thread.start()
        return server
