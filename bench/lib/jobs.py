"""Figure 6: submit -> complete of a job whose every phase is `true`, against a shell
script running the same commands back to back."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import requests

from multiagent.vocabulary import Phase

from .common import Row, absolute_target, median, pct, wait_for
from .fleet import BenchFleet

PHASES = Phase.ALL
QUEUE = "bench-jobs"
AGENT = "jobber"


def job_agent() -> dict[str, Any]:
    """Agent settings: every phase `true`, a short polling interval."""
    return {
        "job_queues": [QUEUE],
        "polling_interval": 0.1,
        **{f"{phase}_command": "true" for phase in PHASES},
    }


def job_body(parent: str | None) -> dict[str, Any]:
    """Data for every data phase, so none is skipped. Allocate waits (upstream semantics)
    until the job or its parent job ends: a parent that has already completed lets it
    go on at once, so every phase runs."""
    body: dict[str, Any] = {
        "job_queue": QUEUE,
        "provision_data": {"url": "http://example.invalid/img"},
        "firmware_update_data": {"version": "latest"},
        "test_data": {"test_cmds": "true"},
        "reserve_data": {"ssh_keys": ["lp:nobody"], "timeout": 1},
    }
    if parent:
        body["allocate_data"] = {"allocate": True}
        body["parent_job_id"] = parent
    return body


def run_job(session: requests.Session, url: str, body: dict[str, Any]) -> tuple[str, float]:
    t0 = time.perf_counter()
    job_id = session.post(f"{url}/v1/job", json=body, timeout=10).json()["job_id"]

    def complete() -> dict[str, Any] | None:
        resp = session.get(f"{url}/v1/result/{job_id}", timeout=10)
        data = resp.json() if resp.status_code == 200 else {}
        return data if data.get("job_state") in ("complete", "cancelled") else None

    result = wait_for(complete, 60, f"job {job_id} to complete", 0.01)
    elapsed = time.perf_counter() - t0
    statuses = {p: result.get(f"{p}_status") for p in PHASES}
    ran = [p for p, code in statuses.items() if code is not None]
    if result["job_state"] != "complete" or any(statuses[p] != 0 for p in ran):
        raise RuntimeError(f"job {job_id} did not complete cleanly: {result}")
    if body.get("parent_job_id") and len(ran) != len(PHASES):
        raise RuntimeError(f"job {job_id}: phases skipped: {statuses}")
    return job_id, elapsed


def shell_baseline(reps: int) -> list[float]:
    """The same seven commands, each through `sh -c` as the agent runs them."""
    script = "; ".join(["sh -c true"] * len(PHASES))
    walls = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(["sh", "-c", script], check=True)
        walls.append(time.perf_counter() - t0)
    return walls


def job_rows(fleet: BenchFleet, reps: int) -> list[Row]:
    fleet.wait_ready([AGENT], timeout=60)
    session = requests.Session()
    parent, _ = run_job(session, fleet.url, job_body(None))  # warm-up, and the parent
    times = [run_job(session, fleet.url, job_body(parent))[1] for _ in range(reps)]
    base = shell_baseline(max(reps, 5))
    baseline = median(base)
    value = median(times)
    rows = [
        Row(
            "Shell script: the 7 commands (`sh -c true`) back to back",
            baseline,
            "s",
            pct(base, 95),
            note="baseline",
            n=len(base),
        ),
        Row(
            "Job submit → complete, 6 phases + cleanup all `true` (polling_interval 0.1)",
            value,
            "s",
            pct(times, 95),
            baseline=baseline,
            baseline_text="shell script",
            note="includes ≤ 0.1 s polling wait",
            n=len(times),
            baseline_n=len(base),
        ),
    ]
    overhead = Row(
        "Job agent overhead (submit → complete − shell script)",
        value - baseline,
        "s",
        note="six trivial phases + cleanup; medians",
        n=len(times),
        baseline_n=len(base),
    )
    rows.append(absolute_target(overhead, 1.0))
    return rows
