"""Helpers for tf-agent tests: a real agent subprocess against the local server."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures_server import LocalServer, pause_after, running_server, wait_for
from prometheus_client.parser import text_string_to_metric_families

from multiagent.vocabulary import drain_file_name, restart_file_name, status_file_name

_names = itertools.count(1)

# Every key of tf-agent's status file (run/<name>/<name>.json).
STATUS_KEYS = {
    "agent",
    "pid",
    "state",
    "job_id",
    "phase",
    "since",
    "last_poll",
    "restart_pending",
    "restart_reason",
    "drained",
    "server_reachable",
    "version",
    "written_at",
}


def holds_until(
    invariant: Callable[[], Any],
    done: Callable[[], Any],
    timeout: float = 10.0,
    step: float = 0.02,
    what: str = "invariant",
) -> None:
    """`invariant` stays true, looked at every `step`, until `done` is (before `timeout`).

    For "nothing happened": the invariant is the absence of what would have happened, and
    `done` is the proof that it had every chance to happen (the agent went round its loop).
    """
    start = time.monotonic()
    while True:
        began = time.monotonic()
        if not invariant():
            raise AssertionError(f"{what} broke after {time.monotonic() - start:.2f}s")
        if done():
            return
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s; {what} held all along")
        time.sleep(pause_after(began, step))


def pid_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (reparented zombies may linger)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


# Processes a test's phases started, read from their pid files: they end with the test.
_phase_pids: list[int] = []


def read_pid(path: Path, timeout: float = 10) -> int:
    """The pid a job's command wrote to `path` (waiting for it); the process is ended
    (SIGKILL) after the test if the agent failed to end it."""
    text = wait_for(lambda: path.exists() and path.read_text().strip(), timeout, what=str(path))
    _phase_pids.append(int(text))
    return int(text)


@pytest.fixture(autouse=True)
def _end_phase_processes() -> Iterator[None]:
    """If the agent failed to kill a process of a test's job, the test still ends it."""
    yield
    while _phase_pids:
        pid = _phase_pids.pop()
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


class AgentProc:
    """One `python -m multiagent.agent` process with its own dirs, queue and name."""

    def __init__(self, base: Path, server_url: str, **overrides: Any):
        n = next(_names)
        self.name = overrides.pop("agent_id", f"agent-{os.getpid()}-{n}")
        self.queue = f"q-{self.name}"
        self.base = base / self.name
        self.run_dir = self.base / "run"
        self.restart_dir = self.base / "restart"
        for d in (self.run_dir, self.restart_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.config = {
            "agent_id": self.name,
            "server_address": server_url,
            "polling_interval": 0.2,
            "job_queues": [self.queue],
            "execution_basedir": str(self.base / "exec"),
            "results_basedir": str(self.base / "results"),
            "logging_basedir": str(self.base / "logs"),
            "logging_quiet": True,
            **overrides,
        }
        self.conf_path = self.base / "testflinger-agent.conf"
        self.conf_path.write_text(yaml.safe_dump(self.config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = self.base / "agent.stderr"

    @property
    def status_path(self) -> Path:
        return self.run_dir / status_file_name(self.name)

    @property
    def restart_file(self) -> Path:
        return self.restart_dir / restart_file_name(self.name)

    @property
    def drain_file(self) -> Path:
        return self.run_dir / drain_file_name(self.name)

    @property
    def log_text(self) -> str:
        path = self.base / "logs" / "testflinger-agent.log"
        return path.read_text() if path.exists() else ""

    def command(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "multiagent.agent",
            "-c",
            str(self.conf_path),
            "--run-dir",
            str(self.run_dir),
            "--restart-dir",
            str(self.restart_dir),
            *extra,
        ]

    def start(
        self, *extra: str, wait_polling: bool = True, env: dict[str, str] | None = None
    ) -> AgentProc:
        """`env`: extra environment variables for the agent (e.g. TF_AGENT_NO_INOTIFY)."""
        self.started_at = time.time()
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                self.command(*extra),
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, **(env or {})},
            )
        if wait_polling:
            self.wait_status(
                lambda s: (s.get("last_poll") or 0) > self.started_at, what="first poll"
            )
        return self

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}

    def wait_status(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0, what: str = "status"
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited {self.proc.returncode} while waiting for {what}: "
                    f"{self.stderr_path.read_text()}\n{self.log_text}"
                )
            st = self.status()
            return st if st and pred(st) else None

        return wait_for(check, timeout, what=what)

    def status_writes(self) -> Callable[[int], bool]:
        """A `done` for holds_until: true once the agent rewrote its status file `n` times."""
        seen: set[tuple[int, int]] = set()

        def written(n: int) -> bool:
            try:
                st = self.status_path.stat()
                seen.add((st.st_ino, st.st_mtime_ns))
            except OSError:
                pass
            return len(seen) > n  # the first value is the write before the window

        return written

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def forget_name(self) -> None:
        """Remove the name guard's lock file a killed agent leaves in its user's home."""
        from multiagent.agent.status import NameGuard, private_lock_dir

        dir_fd = private_lock_dir()
        if dir_fd is None:
            return
        try:
            os.unlink(NameGuard(self.name, self.config["server_address"]).lock_name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        finally:
            os.close(dir_fd)


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text as prometheus_client's own parser reads it: {(sample name, sorted
    labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def job(agent: AgentProc, test_cmds: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"job_queue": agent.queue, **extra}
    if test_cmds is not None:
        body["test_data"] = {"test_cmds": test_cmds}
    return body


@pytest.fixture
def inotify_instance() -> None:
    """Skips a test that needs an inotify instance when this user has none left: every one
    of fs.inotify.max_user_instances held by other processes (a host running that many
    agents as this user), where tf-agent itself goes on with dnotify."""
    import errno

    from multiagent.agent.triggers import DirWatch

    try:
        DirWatch().close()
    except OSError as exc:
        if exc.errno != errno.EMFILE:
            raise
        pytest.skip(f"no inotify instance left for this user: {exc}")


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """One server for a module's agents (each agent has its own queue and name)."""
    with running_server(tmp_path_factory.mktemp("server")) as server:
        yield server


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProc]]:
    agents: list[AgentProc] = []

    def factory(server_url: str, **overrides: Any) -> AgentProc:
        agent = AgentProc(tmp_path, server_url, **overrides)
        agents.append(agent)
        return agent

    yield factory
    for agent in agents:
        agent.stop()
        agent.forget_name()


@contextlib.contextmanager
def _made_user() -> Iterator[str]:
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd to make a throwaway user")
    name = f"tfsec{uuid.uuid4().hex[:8]}"
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"useradd does not work here: {made.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def throwaway_user() -> Iterator[str]:
    """A system user made for this test and removed after it (root and useradd only)."""
    with _made_user() as name:
        yield name


@pytest.fixture
def another_throwaway_user() -> Iterator[str]:
    """A second such user, for tests where two users other than root meet."""
    with _made_user() as name:
        yield name
