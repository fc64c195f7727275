"""A host's rolling restart while its agents are busy: five tf-agents, each running one
job of a different length (25, 20, 15, 10 and 5 s of `sleep`, the longest on the agent
asked first) with three of the same length queued behind it (a lab's steady stream),
then `tf-fleet restart --safe --all` timed from its start until every agent is back and
polling.

    .venv/bin/python bench/rolling_restart.py [--max-parallel N]

`--max-parallel` is passed through (tf-fleet's default is 1: one agent at a time; 0 asks
every agent at once, each restarting when its own job ends; an agent not yet asked takes
its next job when one ends). The fleet runs under its own supervisord with its embedded
server on 127.0.0.1, in a temp dir removed at the end. The jobs that ran when the roll
began must end `complete` with their test phase passing. Not part of the test suite: it
takes a minute or two.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from lib.common import BIN, free_port, tf_fleet_cmd, wait_for

# The longest job on the agent asked first (names in order): a roll that waits for one
# agent at a time then finds the others busy with their next jobs.
JOB_SECONDS = (25, 20, 15, 10, 5)
QUEUED = 3  # jobs queued behind each running one


def fleet_file(root: Path, port: int) -> dict[str, Any]:
    connector = (
        str(BIN / "tf-local-connector") + " {} -c {{agent_dir}}/default.yaml testflinger.json"
    )
    names = [f"busy{i}" for i in range(len(JOB_SECONDS))]
    return {
        "server": {"embedded": True, "port": port},
        "state_dir": str(root / "state"),
        "restart": {"restart_dir": str(root / "restart")},
        "defaults": {
            "polling_interval": 1,
            **{f"{p}_command": connector.format(p) for p in ("setup", "test", "cleanup")},
            "device": {"device_ip": "127.0.0.1"},
        },
        "agents": {n: {"job_queues": [f"q-{n}"]} for n in names},
    }


def run(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = tf_fleet_cmd("-c", str(root / "fleet.yaml"), *args)
    proc = subprocess.run(command, capture_output=True, text=True, cwd=root)
    if check and proc.returncode:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def status(root: Path) -> dict[str, dict[str, Any]]:
    data = json.loads(run(root, "status", "--json", check=False).stdout)
    return {row["name"]: row for row in data["agents"]}


def http(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-parallel", default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tfr-"))
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    fleet = fleet_file(root, port)
    (root / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    try:
        run(root, "up")
        names = sorted(fleet["agents"])
        wait_for(lambda: all(r["last_poll"] for r in status(root).values()), 60, "first polls")
        jobs = {}
        for name, length in zip(names, JOB_SECONDS, strict=True):
            body = {"job_queue": f"q-{name}", "test_data": {"test_cmds": f"sleep {length}"}}
            jobs[name] = http(f"{server}/v1/job", body)["job_id"]
            # The lab's steady stream: next jobs already queued behind each running one.
            for _ in range(QUEUED):
                http(f"{server}/v1/job", body)
        wait_for(lambda: all(r["job_id"] for r in status(root).values()), 60, "every job running")
        before = {n: r["pid"] for n, r in status(root).items()}
        extra = ["--max-parallel", args.max_parallel] if args.max_parallel is not None else []
        started = time.monotonic()
        run(root, "restart", "--safe", "--all", "--timeout", "10m", *extra)
        seconds = time.monotonic() - started
        after = status(root)
        assert all(after[n]["pid"] != before[n] for n in names), (before, after)
        for job in jobs.values():  # the jobs that ran when the roll began
            result = http(f"{server}/v1/result/{job}")
            assert result["job_state"] == "complete" and result["test_status"] == 0, result
        how = f"--max-parallel {args.max_parallel}" if extra else "default --max-parallel"
        print(
            f"rolling restart of 5 agents busy {min(JOB_SECONDS)}-{max(JOB_SECONDS)} s ({how}):"
            f" {seconds:.1f} s; every job complete, every agent back on a new process"
        )
    finally:
        run(root, "down", "--force", check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
