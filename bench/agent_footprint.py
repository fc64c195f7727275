"""Measure tf-agent: idle memory, idle CPU, job latency, restart latency (loopback only).

    .venv/bin/python bench/agent_footprint.py [--idle-seconds 60]

Starts a local server and agents in a temporary directory, prints figures, and
ends every process it started (by pid).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

PHASES = ("setup", "provision", "firmware_update", "test", "allocate", "reserve", "cleanup")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read()


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.005)
    raise SystemExit(f"timed out waiting for {what}")


def start_agent(base: Path, url: str, name: str, interval: float, **extra) -> tuple:
    run = base / name
    run.mkdir()
    conf = run / "agent.conf"
    cfg = {
        "agent_id": name,
        "server_address": url,
        "polling_interval": interval,
        "job_queues": [f"q-{name}"],
        "execution_basedir": str(run / "exec"),
        "results_basedir": str(run / "results"),
        "logging_basedir": str(run / "logs"),
        "logging_quiet": True,
        **extra,
    }
    conf.write_text(json.dumps(cfg))  # JSON is YAML
    started = time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "multiagent.agent",
            "-c",
            str(conf),
            "--run-dir",
            str(run),
            "--restart-dir",
            str(run),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    status = run / f"{name}.json"

    def polled():
        try:
            return (json.loads(status.read_text()).get("last_poll") or 0) > started
        except (OSError, ValueError):
            return False

    wait_for(polled, 15, f"{name} first poll")
    return proc, cfg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="tf-agent-bench-") as tmp:
        base = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "multiagent.server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--db",
                str(base / "server.db"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(server)
        try:

            def up():
                try:
                    return http("GET", url + "/v1")[0] == 200
                except OSError:
                    return False

            wait_for(up, 20, "server")

            # 1. idle memory and CPU at polling_interval 10
            idle, _ = start_agent(base, url, "idle-agent", 10)
            procs.append(idle)
            time.sleep(2)
            ps = psutil.Process(idle.pid)
            mem = ps.memory_full_info()
            print(
                f"idle RSS: {mem.rss / 2**20:.1f} MiB   USS: {mem.uss / 2**20:.1f} MiB   "
                f"PSS: {getattr(mem, 'pss', 0) / 2**20:.1f} MiB"
            )
            cpu0 = sum(ps.cpu_times()[:2])
            time.sleep(args.idle_seconds)
            cpu1 = sum(ps.cpu_times()[:2])
            print(
                f"idle CPU over {args.idle_seconds:.0f} s at polling_interval 10: "
                f"{cpu1 - cpu0:.3f} s"
            )

            # 2. SIGUSR1 -> exit, idle
            t0 = time.monotonic()
            idle.send_signal(signal.SIGUSR1)
            rc = idle.wait(10)
            print(f"SIGUSR1 -> exit (idle): {(time.monotonic() - t0) * 1000:.0f} ms (exit {rc})")

            # 3. submit -> complete, every phase `true`
            commands = {f"{p}_command": "true" for p in PHASES if p != "allocate"}
            busy, cfg = start_agent(base, url, "job-agent", 0.1, **commands)
            procs.append(busy)
            times = []
            for _ in range(args.jobs):
                job = {
                    "job_queue": cfg["job_queues"][0],
                    "provision_data": {"url": "x"},
                    "firmware_update_data": {"v": 1},
                    "test_data": {"test_cmds": "true"},
                    "reserve_data": {"timeout": 1},
                }
                t0 = time.monotonic()
                job_id = json.loads(http("POST", url + "/v1/job", job)[1])["job_id"]

                def done(job_id=job_id):
                    status, body = http("GET", f"{url}/v1/result/{job_id}")
                    return status == 200 and json.loads(body).get("job_state") == "complete"

                wait_for(done, 30, "job complete")
                times.append(time.monotonic() - t0)
            times.sort()
            print(
                f"submit -> complete (6 phases `true`, polling_interval 0.1, {args.jobs} jobs): "
                f"median {times[len(times) // 2] * 1000:.0f} ms, "
                f"min {times[0] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms"
            )
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        os.kill(proc.pid, signal.SIGKILL)
                        proc.wait()


if __name__ == "__main__":
    main()
