"""Figure 7: the local server's GET /v1/job latency under many polling agents and its
hand-out rate. Reuses bench/server_poll.py (a colleague's script) for the server and the
polling clients; GET /v1 (no database) under the same load is the baseline."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import requests
import server_poll  # bench/server_poll.py: bench/ is on sys.path when run.py runs

from .common import Reaper, Row, absolute_target, median, pct


def start(root: Path, reaper: Reaper) -> tuple[int, str]:
    proc, url = server_poll.start_server(root / "bench.db", root / "server.log", 4)
    reaper.add(proc.pid)
    return proc.pid, url


def _probe(url: str, until: float, out: list[float]) -> None:
    """GET /v1 ten times a second: the HTTP stack and Flask without the database."""
    session = requests.Session()
    while time.monotonic() < until:
        t0 = time.perf_counter()
        session.get(f"{url}/v1", timeout=10)
        out.append(time.perf_counter() - t0)
        time.sleep(0.1)


def poll_latency(
    url: str,
    agents: int,
    duration: float,
    server_pid: int,
) -> tuple[list[float], list[float], int, float]:
    """(GET /v1/job latencies s, GET /v1 latencies s, errors, server CPU s)."""
    procs = min(4, os.cpu_count() or 1)
    server = psutil.Process(server_pid)
    cpu0 = sum(server.cpu_times()[:2])
    start_at = time.monotonic() + 2.0
    queue: mp.Queue = mp.Queue()
    per = -(-agents // procs)
    workers = [
        mp.Process(
            target=server_poll._poll_process,
            args=(url, k * per, min(per, agents - k * per), start_at, duration, queue),
        )
        for k in range(procs)
        if k * per < agents
    ]
    for worker in workers:
        worker.start()
    probes: list[float] = []
    time.sleep(max(0.0, start_at - time.monotonic()))
    prober = threading.Thread(target=_probe, args=(url, start_at + duration, probes))
    prober.start()
    submitter = requests.Session()
    submitted = 0
    while time.monotonic() < start_at + duration:  # a trickle of 2 jobs/s
        if time.monotonic() >= start_at + submitted / 2.0:
            submitter.post(f"{url}/v1/job", json={"job_queue": "bench"}, timeout=10)
            submitted += 1
        time.sleep(0.01)
    latencies: list[float] = []
    errors = 0
    for _ in workers:
        lat, _app, err = queue.get(timeout=duration + 60)
        latencies += lat
        errors += err
    for worker in workers:
        worker.join(30)
    prober.join(30)
    return latencies, probes, errors, sum(server.cpu_times()[:2]) - cpu0


def hand_out(url: str, jobs: int, pollers: int) -> tuple[float, bool]:
    """(jobs/s, each job handed out exactly once) with `pollers` agents popping a queue."""
    session = requests.Session()
    ids = {
        session.post(f"{url}/v1/job", json={"job_queue": "burst"}, timeout=10).json()["job_id"]
        for _ in range(jobs)
    }
    got: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(pollers + 1)

    def poller(i: int) -> None:
        agent = requests.Session()
        agent.post(f"{url}/v1/agents/data/burst-{i}", json={"queues": ["burst"]}, timeout=10)
        mine = []
        barrier.wait()
        for _ in range(jobs + 1):
            resp = agent.get(f"{url}/v1/job", params={"queue": "burst"}, timeout=30)
            if resp.status_code != 200:
                break
            mine.append(resp.json()["job_id"])
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=poller, args=(i,)) for i in range(pollers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join(120)
    elapsed = time.perf_counter() - t0
    counts = Counter(got)
    once = set(counts) == ids and all(n == 1 for n in counts.values())
    return jobs / elapsed, once


def server_rows(root: Path, reaper: Reaper, agents: int, duration: float, jobs: int) -> list[Row]:
    pid, url = start(root, reaper)
    try:
        lat, probes, errors, cpu = poll_latency(url, agents, duration, pid)
        rate, once = hand_out(url, jobs, 20)
    finally:
        reaper.end([pid], grace=15)
    ms = [v * 1000 for v in lat]
    base = [v * 1000 for v in probes]
    note = (
        f"{len(ms)} polls, {errors} errors, server CPU {1000 * cpu / max(1, len(ms)):.2f}"
        f" ms/request; client-observed"
    )
    p50 = Row(
        f"Server GET /v1/job p50, {agents} agents polling every 1 s",
        median(ms),
        "ms",
        baseline=median(base),
        baseline_text="GET /v1 (no DB), same load",
        note=note,
    )
    p99 = Row(
        f"Server GET /v1/job p99, {agents} agents polling every 1 s",
        pct(ms, 99),
        "ms",
        baseline=pct(base, 99),
        baseline_text="GET /v1 (no DB), same load p99",
    )
    handed = Row(
        f"Server hand-out: {jobs} jobs, 20 pollers",
        rate,
        "jobs/s",
        note=f"each job exactly once: {once}",
    )
    return [p50, absolute_target(p99, 20.0), handed]
