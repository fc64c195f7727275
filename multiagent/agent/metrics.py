"""Prometheus text metrics, served by the stdlib http.server in a thread (no prometheus_client)."""

from __future__ import annotations

import threading

from multiagent.vocabulary import EXIT_RECOVERY_FAILED

TYPE_CHECKING = False  # no typing import at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any

# Upstream's phase_duration_seconds buckets.
BUCKETS = (60, 180, 300, 600, 1200, 1800, 3600, 7200, 14400)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self, agent_id: str):
        self.agent = _esc(agent_id)
        self.lock = threading.Lock()
        self.jobs = 0
        self.failures: dict[str, int] = {}
        self.durations: dict[str, list[float]] = {}  # phase -> [bucket counts..., sum, count]
        self.recovery_failures = 0
        self.busy = 0
        self.restart_pending = 0

    def job_started(self) -> None:
        with self.lock:
            self.jobs += 1
            self.busy = 1

    def job_done(self) -> None:
        with self.lock:
            self.busy = 0

    def phase_done(self, phase: str, code: int, seconds: float) -> None:
        with self.lock:
            if code != 0:
                self.failures[phase] = self.failures.get(phase, 0) + 1
            if code == EXIT_RECOVERY_FAILED:
                self.recovery_failures += 1
            row = self.durations.setdefault(phase, [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    row[i] += 1
            row[-2] += seconds
            row[-1] += 1

    def render(self) -> str:
        a = f'agent_id="{self.agent}"'
        with self.lock:
            out = [
                "# HELP jobs_total Jobs started by this agent.",
                "# TYPE jobs_total counter",
                f"jobs_total{{{a}}} {self.jobs}",
                "# HELP failures_total Failed phases.",
                "# TYPE failures_total counter",
            ]
            for phase, n in sorted(self.failures.items()):
                out.append(f'failures_total{{{a},test_phase="{phase}"}} {n}')
            out += [
                "# HELP recovery_failures_total Phases that exited 46.",
                "# TYPE recovery_failures_total counter",
                f"recovery_failures_total{{{a}}} {self.recovery_failures}",
                "# HELP phase_duration_seconds Phase run time.",
                "# TYPE phase_duration_seconds histogram",
            ]
            for phase, row in sorted(self.durations.items()):
                labels = f'{a},test_phase="{phase}"'
                for i, bound in enumerate(BUCKETS):
                    out.append(
                        f'phase_duration_seconds_bucket{{{labels},le="{bound}"}} {int(row[i])}'
                    )
                out.append(f'phase_duration_seconds_bucket{{{labels},le="+Inf"}} {int(row[-1])}')
                out.append(f"phase_duration_seconds_sum{{{labels}}} {row[-2]:.3f}")
                out.append(f"phase_duration_seconds_count{{{labels}}} {int(row[-1])}")
            out += [
                "# HELP agent_busy 1 while a job runs.",
                "# TYPE agent_busy gauge",
                f"agent_busy{{{a}}} {self.busy}",
                "# HELP agent_restart_pending 1 when a safe restart is waiting.",
                "# TYPE agent_restart_pending gauge",
                f"agent_restart_pending{{{a}}} {self.restart_pending}",
            ]
        return "\n".join(out) + "\n"

    def serve(self, port: int, host: str = "127.0.0.1") -> Any:
        # Imported only when -p is given: http.server pulls in more modules.
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

        server = HTTPServer((host, port), Handler)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 60}, name="metrics", daemon=True
        )
        thread.start()
        return server
