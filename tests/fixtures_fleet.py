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
import yaml

# A stand-in agent for tests that only need a long-lived process: it accepts the
# `-c CONF` tf-fleet appends to upstream-style commands and exits 0 on SIGTERM.
SLEEPER = f"{sys.executable} -c 'import signal,sys,time; signal.signal(15, lambda *a: sys.exit(0)); time.sleep(1e9)'"  # noqa: E501


class FleetEnv:
    def __init__(self, root: Path):
        self.root = root
        self.fleet_file = root / "fleet.yaml"
        self.state_dir = root / "state"

    def write(self, fleet: dict[str, Any]) -> None:
        fleet.setdefault("state_dir", str(self.state_dir))
        self.fleet_file.write_text(yaml.safe_dump(fleet, sort_keys=False))

    def run(self, *args: str, check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "multiagent", "-c", str(self.fleet_file), *args],
            capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if check and proc.returncode != 0:
            raise AssertionError(f"tf-fleet {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
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
