"""A fleet in a temp dir, driven through the real `tf-fleet` command and a real supervisord."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml
from fixtures_server import free_port

# A stand-in agent for tests that only need a long-lived process: it accepts the
# `-c CONF` tf-fleet appends to upstream-style commands and exits 0 on SIGTERM.
SLEEPER = f"{sys.executable} -c 'import signal,sys,time; signal.signal(15, lambda *a: sys.exit(0)); time.sleep(1e9)'"  # noqa: E501


UPSTREAM_LIKE = f"{sys.executable} {Path(__file__).parent / 'upstream_like_agent.py'}"
PHASES = ("setup", "provision", "firmware_update", "test", "allocate", "reserve", "cleanup")


class FleetEnv:
    def __init__(self, root: Path):
        self.root = root
        self.fleet_file = root / "fleet.yaml"
        self.state_dir = root / "state"
        self.port = free_port()
        self.server_url = f"http://127.0.0.1:{self.port}"

    def agent_fleet(
        self, names: list[str], queues: dict[str, list[str]] | None = None, **defaults: Any
    ) -> dict[str, Any]:
        """tf-agents with the local connector against an embedded server on a free port."""
        connector = "tf-local-connector {phase} -c {agent_dir}/default.yaml testflinger.json"
        base = {
            "polling_interval": 0.5,
            "startsecs": 1,
            "stopwaitsecs": 20,
            "setup_command": connector.format(phase="setup", agent_dir="{agent_dir}"),
            "test_command": connector.format(phase="test", agent_dir="{agent_dir}"),
            "cleanup_command": connector.format(phase="cleanup", agent_dir="{agent_dir}"),
            "device": {"device_ip": "127.0.0.1"},
        }
        base.update(defaults)
        queues = queues or {}
        return {
            "server": {"embedded": True, "port": self.port},
            "restart": {"restart_dir": str(self.root / "restart")},
            "defaults": base,
            "agents": {n: {"job_queues": queues.get(n, ["shared"])} for n in names},
        }

    def submit(self, queue: str, seconds: float, commands: str | None = None) -> str:
        job = {
            "job_queue": queue,
            "test_data": {"test_cmds": commands or f"echo working; sleep {seconds}; echo ok"},
        }
        resp = requests.post(f"{self.server_url}/v1/job", json=job, timeout=10)
        resp.raise_for_status()
        return resp.json()["job_id"]

    def result(self, job_id: str) -> dict[str, Any]:
        resp = requests.get(f"{self.server_url}/v1/result/{job_id}", timeout=10)
        return resp.json() if resp.status_code == 200 else {}

    def job_state(self, job_id: str) -> str | None:
        return self.result(job_id).get("job_state")

    def wait_running(self, job_id: str, timeout: float = 30.0) -> None:
        self.wait_for(
            lambda: self.job_state(job_id) in ("test",),
            timeout,
            f"job {job_id} to reach its test phase",
        )

    def assert_completed(self, job_id: str, timeout: float = 60.0) -> None:
        """The job ended `complete` and every phase that ran exited 0, as the server saw."""
        self.wait_for(
            lambda: self.job_state(job_id) in ("complete", "completed", "cancelled"),
            timeout,
            f"job {job_id} to end",
        )
        result = self.result(job_id)
        assert result["job_state"] == "complete", result
        statuses = {
            p: result.get(f"{p}_status") for p in PHASES if result.get(f"{p}_status") is not None
        }
        assert statuses.get("test") == 0, result
        assert all(code == 0 for code in statuses.values()), statuses

    def write(self, fleet: dict[str, Any]) -> None:
        fleet.setdefault("state_dir", str(self.state_dir))
        self.fleet_file.write_text(yaml.safe_dump(fleet, sort_keys=False))

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "multiagent", "-c", str(self.fleet_file), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"tf-fleet {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def status(self) -> dict[str, dict[str, Any]]:
        proc = self.run("status", "--json", check=False)
        return {a["name"]: a for a in json.loads(proc.stdout)["agents"]}

    def supervisord_pid(self) -> int | None:
        try:
            return int((self.state_dir / "supervisor" / "supervisord.pid").read_text())
        except (OSError, ValueError):
            return None

    def processes(self) -> list[psutil.Process]:
        """supervisord and everything below it."""
        pid = self.supervisord_pid()
        if not pid or not psutil.pid_exists(pid):
            return []
        try:
            parent = psutil.Process(pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def cleanup(self) -> None:
        procs = self.processes()
        if procs:
            self.run("down", check=False, timeout=60)
        for proc in self.processes():  # only what this test's supervisord started
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass


class ProcessSampler:
    """Samples the process table while a test runs: records the most processes that ever
    ran at once for each agent name (the promise: never two)."""

    def __init__(self, env: FleetEnv, interval: float = 0.05):
        import threading

        self.env = env
        self.interval = interval
        self.most: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        marker = str(self.env.state_dir / "agents") + "/"
        while not self._stop.is_set():
            counts: dict[str, int] = {}
            for proc in psutil.process_iter(["cmdline"]):
                cmdline = proc.info["cmdline"] or []
                for word in cmdline:
                    if word.startswith(marker) and word.endswith("/testflinger-agent.conf"):
                        name = word[len(marker) :].split("/")[0]
                        counts[name] = counts.get(name, 0) + 1
            for name, count in counts.items():
                self.most[name] = max(self.most.get(name, 0), count)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def assert_never_two(self) -> None:
        assert self.samples > 5
        assert self.most and max(self.most.values()) == 1, self.most


@pytest.fixture
def fleet_env() -> Iterator[FleetEnv]:
    # Short path: the supervisord socket lives in the state dir (unix path limit).
    root = Path(tempfile.mkdtemp(prefix="tff-"))
    env = FleetEnv(root)
    try:
        yield env
    finally:
        env.cleanup()
        if os.environ.get("TF_FLEET_KEEP_TMP") != "1":
            shutil.rmtree(root, ignore_errors=True)
