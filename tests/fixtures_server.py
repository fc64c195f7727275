"""A real `tf-fleet server` on a loopback port, started and stopped by the test; the
waiting and port helpers every fixture module shares."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

T0 = 1_780_000_000.0  # a fixed "now" (2026-05-28) so times in assertions are exact


class Clock:
    """The server's clock in tests of the app itself: it moves only when told."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


HANG_GUARD = 30.0


def wait_for(
    cond: Callable[[], Any], timeout: float = 10.0, step: float = 0.02, what: str = "condition"
) -> Any:
    """Wait for an event with a deadline; returns the condition's first truthy value.

    A deadline is a hang guard, never a speed target (bench/ holds those): no wait gives
    up before HANG_GUARD seconds, since on a loaded host the suite's two cores can take
    seconds to start a measured Python process."""
    limit = max(timeout, HANG_GUARD)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        began = time.monotonic()
        value = cond()
        if value:
            return value
        time.sleep(pause_after(began, step))
    raise AssertionError(f"timed out after {limit}s waiting for {what}")


def pause_after(began: float, step: float) -> float:
    """The pause before the next look: at least `step`, and at least as long as the look
    took. A look that runs a command (`tf-fleet status` is a whole Python process) keeps a
    core busy while it runs; looking again at once would keep it busy for the whole wait,
    and the suite shares two cores between its workers."""
    return max(step, time.monotonic() - began)


def tar_member(tar: tarfile.TarFile, name: str) -> bytes:
    """The content of regular file `name` in `tar`."""
    member = tar.extractfile(name)
    assert member is not None, f"{name} is not a regular file in the archive"
    return member.read()


def tar_gz(files: dict[str, bytes]) -> bytes:
    """A gzipped tar archive of `files` (member name: content), as attachments travel."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class LocalServer:
    """One server process; `stop()`/`start()` simulate an outage on the same port and db."""

    def __init__(
        self,
        db_path: Path,
        log_path: Path,
        extra_args: list[str] | None = None,
        *,
        strict_provision_data: bool = False,
        measured: bool = True,
    ):
        self.db_path = db_path
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = list(extra_args or [])
        # Agent tests submit jobs for home-made connectors ({url: "u"}); the compatibility
        # tests ask for upstream's provision_data schemas.
        if not strict_provision_data:
            self.extra_args.append("--any-provision-data")
        # Unmeasured: without the suite's coverage, for a load test of paths measured elsewhere
        self.env = None if measured else without_coverage()
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None  # exit status of the last stopped process
        self.read_headers: dict[str, str] = {}  # a reader's token once reads need one

    def start(self, timeout: float = 15.0) -> None:
        cmd = [
            sys.executable,
            "-m",
            "multiagent.server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db",
            str(self.db_path),
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited {self.proc.returncode}: {self.log_path.read_text()}"
                )
            try:
                if requests.get(self.url + "/v1", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not answer on {self.url}: {self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.returncode = self.proc.returncode
        self.proc = None

    # Client helpers used by agent and fleet tests.
    def submit(self, job: dict) -> str:
        resp = requests.post(self.url + "/v1/job", json=job, timeout=10)
        resp.raise_for_status()
        return resp.json()["job_id"]

    def read(self, path: str, **kwargs) -> requests.Response:
        """A GET as a reader: once the server has clients or a shared token, reads need a
        token, so the first 401 creates a contributor client in the db and logs in."""
        resp = requests.get(self.url + path, headers=self.read_headers, timeout=10, **kwargs)
        if resp.status_code == 401:
            self.read_headers = self._reader_login()
            resp = requests.get(self.url + path, headers=self.read_headers, timeout=10, **kwargs)
        return resp

    def _reader_login(self) -> dict[str, str]:
        from multiagent.server.accounts import Accounts
        from multiagent.server.db import Store

        secret = "fixture-reader-secret"
        store = Store(self.db_path, clock=time.time)
        try:
            Accounts(store).save("fixture-reader", {"role": "contributor"}, secret=secret)
        finally:
            store.close()
        resp = requests.post(
            self.url + "/v1/oauth2/token", auth=("fixture-reader", secret), timeout=10
        )
        resp.raise_for_status()
        return {"Authorization": f"Bearer {resp.json()['access_token']}"}

    def result(self, job_id: str) -> dict:
        resp = self.read(f"/v1/result/{job_id}")
        return resp.json() if resp.status_code == 200 else {}

    def output(self, job_id: str, log_type: str = "output") -> str:
        """The job's whole output (or serial) log as one text, phases in run order."""
        resp = self.read(f"/v1/result/{job_id}/log/{log_type}", params={"format": "text"})
        return resp.text if resp.status_code == 200 else ""

    def agent(self, name: str) -> dict[str, Any]:
        """The agent as the server serves it (what upstream's `agent-status` reads)."""
        resp = self.read(f"/v1/agents/data/{name}")
        return resp.json() if resp.status_code == 200 else {}

    def job_state(self, job_id: str) -> str | None:
        return self.result(job_id).get("job_state")

    def wait_job_state(self, job_id: str, states: set[str], timeout: float = 30.0) -> str:
        deadline = time.monotonic() + max(timeout, HANG_GUARD)
        state = None
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in states:
                return state
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} stayed {state!r}, expected one of {states}")


def without_coverage() -> dict[str, str]:
    """This environment without the variables that start the suite's coverage in every
    Python subprocess."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS_")}


@contextmanager
def running_server(
    base: Path, name: str = "server", extra_args: list[str] | None = None, measured: bool = True
) -> Iterator[LocalServer]:
    """A started server with its db and log `base/NAME.db`, `base/NAME.log`; stopped after."""
    server = LocalServer(base / f"{name}.db", base / f"{name}.log", extra_args, measured=measured)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tf_server(tmp_path: Path) -> Iterator[LocalServer]:
    with running_server(tmp_path) as server:
        yield server
