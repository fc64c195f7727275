"""Figure 7: the local server's GET /v1/job latency under many agents polling once a
second, against GET /v1 (no database) sampled under the same load; and its hand-out rate
with 20 pollers, each job exactly once. Clients use http.client with kept-alive
connections, spread over a few processes, so the client's cost stays small beside the
server's on a small host."""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import requests
import server_poll  # bench/server_poll.py: bench/ is on sys.path when run.py runs

from .common import Reaper, Row, absolute_target, minimum_target, ratio_target, sampled

PROBES = 100  # GET /v1 clients polling once a second beside the agents: the baseline


def start(root: Path, reaper: Reaper) -> tuple[int, str]:
    proc, url = server_poll.start_server(root / "bench.db", root / "server.log", 4)
    reaper.add(proc.pid)
    return proc.pid, url


class Client:
    """One kept-alive HTTP connection to the server."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.cookie = ""  # the server names the agent by a cookie set at registration

    def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        if self.cookie:
            headers["Cookie"] = self.cookie
        try:
            self.conn.request(method, path, data, headers)
            resp = self.conn.getresponse()
            cookie = resp.getheader("Set-Cookie")
            if cookie:
                self.cookie = cookie.split(";", 1)[0]
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            return 0, b""


def _poller(url: str, name: str, path: str, offset: float, until: float, out: list) -> None:
    client = Client(url)
    if path.startswith("/v1/job"):
        client.request("POST", f"/v1/agents/data/{name}", {"state": "waiting", "queues": ["q"]})
    next_at = time.monotonic() + offset
    while True:
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if time.monotonic() >= until:
            return
        t0 = time.perf_counter()
        status, _ = client.request("GET", path)
        out.append((time.perf_counter() - t0, status in (200, 204)))
        next_at += 1.0


def _load_process(
    url: str, first: int, count: int, probes: int, start_at: float, duration: float, queue
) -> None:
    """`count` agents polling GET /v1/job?queue=q and `probes` clients polling GET /v1,
    each once a second, staggered over the second."""
    jobs: list = []
    base: list = []
    threads = []
    for i in range(count + probes):
        k = first + i
        path, out = ("/v1/job?queue=q", jobs) if i < count else ("/v1", base)
        offset = (start_at - time.monotonic()) + (k * 0.618) % 1.0
        thread = threading.Thread(
            target=_poller, args=(url, f"bench-{k}", path, offset, start_at + duration, out)
        )
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    queue.put((jobs, base))


def poll_latency(url: str, agents: int, duration: float, server_pid: int) -> dict:
    procs = min(4, os.cpu_count() or 1)
    server = psutil.Process(server_pid)
    cpu0 = sum(server.cpu_times()[:2])
    start_at = time.monotonic() + 2.0
    queue: mp.Queue = mp.Queue()
    per, probes = -(-agents // procs), -(-PROBES // procs)
    workers = [
        mp.Process(
            target=_load_process,
            args=(url, k * per, min(per, agents - k * per), probes, start_at, duration, queue),
        )
        for k in range(procs)
        if k * per < agents
    ]
    for worker in workers:
        worker.start()
    time.sleep(max(0.0, start_at - time.monotonic()))
    submitter = requests.Session()
    submitted = 0
    while time.monotonic() < start_at + duration:  # a trickle of 2 jobs/s
        if time.monotonic() >= start_at + submitted / 2.0:
            submitter.post(f"{url}/v1/job", json={"job_queue": "q"}, timeout=10)
            submitted += 1
        time.sleep(0.01)
    jobs: list = []
    base: list = []
    for _ in workers:
        got_jobs, got_base = queue.get(timeout=duration + 120)
        jobs += got_jobs
        base += got_base
    for worker in workers:
        worker.join(30)
    return {
        "jobs": [t for t, _ in jobs],
        "base": [t for t, _ in base],
        "errors": sum(not ok for _, ok in jobs + base),
        "cpu": sum(server.cpu_times()[:2]) - cpu0,
        "probes": probes * len(workers),
    }


def _hand_out_process(url: str, first: int, count: int, jobs: int, start_at: float, queue):
    got: list[str] = []
    lock = threading.Lock()

    def poller(i: int) -> None:
        client = Client(url)
        client.request("POST", f"/v1/agents/data/burst-{i}", {"queues": ["burst"]})
        mine = []
        time.sleep(max(0.0, start_at - time.monotonic()))
        for _ in range(jobs + 1):
            status, body = client.request("GET", "/v1/job?queue=burst")
            if status != 200:
                break
            job_id = json.loads(body)["job_id"]
            mine.append(job_id)
            # As an agent does before it asks again: it answers for the job, else the
            # server takes the job back as a lost hand-out when the same agent asks again.
            data = {"job_id": job_id, "state": "setup"}
            client.request("POST", f"/v1/agents/data/burst-{i}", data)
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=poller, args=(first + i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    queue.put((got, time.monotonic()))


def hand_out(url: str, jobs: int, pollers: int) -> tuple[float, bool, int]:
    """(jobs/s, each job handed out exactly once, jobs handed out) with `pollers` agents
    popping one queue as fast as they can (spread over a few processes), each answering
    for its job before it asks again, as an agent does."""
    client = Client(url)
    ids = set()
    for _ in range(jobs):
        _, body = client.request("POST", "/v1/job", {"job_queue": "burst"})
        ids.add(json.loads(body)["job_id"])
    start_at = time.monotonic() + 1.0
    queue: mp.Queue = mp.Queue()
    workers = server_poll.start_workers(
        _hand_out_process, url, pollers, min(4, pollers), jobs, start_at, queue
    )
    got: list[str] = []
    ended = start_at
    for _ in workers:
        part, end = queue.get(timeout=180)
        got += part
        ended = max(ended, end)
    for worker in workers:
        worker.join(30)
    counts = Counter(got)
    once = set(counts) == ids and all(n == 1 for n in counts.values())
    return len(got) / (ended - start_at), once, len(got)


def server_rows(root: Path, reaper: Reaper, agents: int, duration: float, jobs: int) -> list[Row]:
    pid, url = start(root, reaper)
    try:
        load = poll_latency(url, agents, duration, pid)
        rate, once, handed = hand_out(url, jobs, 20)
    finally:
        reaper.end([pid], grace=15)
    ms = [v * 1000 for v in load["jobs"]]
    base = [v * 1000 for v in load["base"]]
    note = (
        f"{agents} agents + {load['probes']} GET /v1 probes, each once a second for "
        f"{duration:.0f} s; {load['errors']} errors; server CPU "
        f"{1000 * load['cpu'] / max(1, len(ms) + len(base)):.2f} ms/request; client-observed"
    )
    baseline_text = "GET /v1 (no DB), same load"
    p50 = sampled(
        f"Server GET /v1/job p50, {agents} agents polling every 1 s",
        ms,
        "ms",
        base,
        baseline_text,
        note=note,
    )
    p50.judged = "median"
    p50.baseline = sampled("", base, "ms").value
    p99 = sampled(
        f"Server GET /v1/job p99, {agents} agents polling every 1 s",
        ms,
        "ms",
        base,
        baseline_text,
    )
    p99.p95 = _p99(ms)  # this row is judged on the p99: shown in the p95 column's place
    p99.baseline = _p99(base)
    p99.judged = "p99"
    absolute_target(p99, 20.0, "≤ 20 ms (p99)")
    within = p99.met
    ratio_target(p99, 1.5)
    p99.met = bool(within and p99.met)
    p99.target = "≤ 20 ms and ≤ 1.5× baseline (p99)"
    handed_row = Row(
        f"Server hand-out: {jobs} jobs, 20 pollers",
        rate,
        "jobs/s",
        note=f"each job exactly once: {once} ({handed} handed out of {jobs}); each poller"
        " answers for its job (agent data naming it) before it asks again",
        n=handed,
    )
    minimum_target(handed_row, 500, "≥ 500 jobs/s, each exactly once")
    handed_row.met = bool(handed_row.met and once)
    return [p50, p99, handed_row]


def _p99(values: list[float]) -> float:
    from .common import pct

    return pct(values, 99)
