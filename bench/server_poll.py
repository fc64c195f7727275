"""Measure the local server: GET /v1/job latency under many polling agents, and hand-out rate.

    .venv/bin/python bench/server_poll.py [--agents 200] [--duration 20] [--jobs 2000]

Starts its own `python -m multiagent.server` on a free loopback port with a temporary db,
and stops it (SIGTERM) at the end. Phase 1: N agents (threads spread over a few processes,
one requests.Session each) poll once a second, staggered, for D seconds while a trickle of
jobs arrives; prints p50/p90/p99/max of the poll latency. Phase 2: J jobs in one queue,
P pollers pop them as fast as they can; prints jobs/s and checks each job went out once.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(db: Path, log: Path, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "multiagent.server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--db",
        str(db),
        "--threads",
        str(threads),
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/v1", timeout=1).ok:
                return proc, url
        except requests.RequestException:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"server did not start: {log.read_text()}")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _app_ms(resp: requests.Response) -> float | None:
    timing = resp.headers.get("Server-Timing", "")
    if "dur=" not in timing:
        return None
    return float(timing.split("dur=", 1)[1].split(",")[0])


def _agent_loop(
    url: str,
    name: str,
    offset: float,
    until: float,
    out: list[float],
    app: list[float],
    errors: list[int],
) -> None:
    session = requests.Session()
    session.post(
        f"{url}/v1/agents/data/{name}", json={"state": "waiting", "queues": ["bench"]}, timeout=10
    )
    next_at = time.monotonic() + offset
    while True:
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if time.monotonic() >= until:
            return
        t0 = time.perf_counter()
        try:
            resp = session.get(f"{url}/v1/job", params={"queue": "bench"}, timeout=10)
            ok = resp.status_code in (200, 204)
        except requests.RequestException:
            ok = False
            resp = None
        out.append(time.perf_counter() - t0)
        if resp is not None and (server_ms := _app_ms(resp)) is not None:
            app.append(server_ms)
        if not ok:
            errors.append(1)
        next_at += 1.0


def _poll_process(
    url: str, first: int, count: int, start_at: float, duration: float, queue: mp.Queue
) -> None:
    # Absolute monotonic times are shared between processes on Linux (CLOCK_MONOTONIC).
    until = start_at + duration
    latencies: list[float] = []
    app: list[float] = []
    errors: list[int] = []
    threads = []
    for i in range(count):
        offset = (start_at - time.monotonic()) + ((first + i) % 100) / 100
        thread = threading.Thread(
            target=_agent_loop,
            args=(url, f"bench-{first + i}", offset, until, latencies, app, errors),
        )
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    queue.put((latencies, app, len(errors)))


def start_workers(
    target: Callable[..., None], url: str, clients: int, procs: int, *rest: object
) -> list[mp.Process]:
    """`clients` clients spread over at most `procs` processes, each started as
    target(url, first client's index, its number of clients, *rest)."""
    per = -(-clients // procs)
    workers = [
        mp.Process(target=target, args=(url, k * per, min(per, clients - k * per), *rest))
        for k in range(procs)
        if k * per < clients
    ]
    for worker in workers:
        worker.start()
    return workers


def phase_latency(
    url: str, agents: int, duration: float, procs: int, trickle: float, server_pid: int
) -> None:
    server = psutil.Process(server_pid)
    cpu_before = sum(server.cpu_times()[:2])
    start_at = time.monotonic() + 2.0  # time for every process to connect first
    queue: mp.Queue = mp.Queue()
    workers = start_workers(_poll_process, url, agents, procs, start_at, duration, queue)
    submitter = requests.Session()
    submitted = 0
    while time.monotonic() < start_at + duration:
        if trickle and time.monotonic() >= start_at + submitted / trickle:
            submitter.post(f"{url}/v1/job", json={"job_queue": "bench"}, timeout=10)
            submitted += 1
        time.sleep(0.01)
    latencies: list[float] = []
    app_ms: list[float] = []
    errors = 0
    for _ in workers:
        lat, app, err = queue.get(timeout=duration + 60)
        latencies += lat
        app_ms += app
        errors += err
    for w in workers:
        w.join()
    server_cpu = sum(server.cpu_times()[:2]) - cpu_before
    ms = [v * 1000 for v in latencies]
    print(
        f"poll latency: {agents} agents x 1 poll/s for {duration:.0f}s over {len(workers)} "
        f"client processes, {submitted} jobs trickled in"
    )
    print(
        f"  polls={len(ms)} errors={errors} rate={len(ms) / duration:.0f}/s; server CPU "
        f"{server_cpu:.2f} s = {1000 * server_cpu / max(1, len(ms)):.2f} ms per request "
        f"(incl. registration and the trickle)"
    )
    print(
        f"  p50={statistics.median(ms):.2f} ms  p90={pct(ms, 90):.2f} ms  "
        f"p99={pct(ms, 99):.2f} ms  max={max(ms):.2f} ms   (client-observed)"
    )
    print(
        f"  p50={statistics.median(app_ms):.2f} ms  p90={pct(app_ms, 90):.2f} ms  "
        f"p99={pct(app_ms, 99):.2f} ms  max={max(app_ms):.2f} ms   "
        f"(in the Flask app, from Server-Timing)"
    )


def phase_throughput(url: str, jobs: int, pollers: int) -> None:
    from lib.server import hand_out  # bench/lib: the one implementation of this figure

    t0 = time.perf_counter()
    rate, exactly_once, _ = hand_out(url, jobs, pollers)
    print(
        f"hand-out: {jobs} jobs, {pollers} pollers: {time.perf_counter() - t0:.2f} s = "
        f"{rate:.0f} jobs/s; each job exactly once: {exactly_once}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument(
        "--procs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="client processes for phase 1 (more than CPUs measures the scheduler)",
    )
    parser.add_argument("--trickle", type=float, default=2.0, help="jobs/s during phase 1")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--pollers", type=int, default=20)
    parser.add_argument("--server-threads", type=int, default=4)
    args = parser.parse_args()
    print(f"cpus={os.cpu_count()} loadavg before={os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="tf-bench-") as tmp:
        proc, url = start_server(
            Path(tmp) / "bench.db", Path(tmp) / "server.log", args.server_threads
        )
        try:
            phase_latency(url, args.agents, args.duration, args.procs, args.trickle, proc.pid)
            phase_throughput(url, args.jobs, args.pollers)
        finally:
            proc.terminate()
            proc.wait(15)
        print(
            f"server stopped, exit status {proc.returncode}; loadavg after={os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    main()
