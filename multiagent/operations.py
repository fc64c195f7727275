"""Safe operations on agents, as small state machines advanced by one scheduler loop.

Each tick reads every process in one XML-RPC call plus the status files of the agents in
flight, and moves each operation on by at most one step. Nothing here kills a process
that runs a job: an agent is only ever *asked* (SIGUSR1, restart file, drain flag) and
stopped or swapped once supervisord reports it has exited by itself.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import triggers
from .layout import Layout
from .procinfo import process_start_time
from .status import PHASES, current_status, read_status_file, tail_lines
from .supervisor import ProcessInfo, Supervisor, SupervisorError

DOWN = {"STOPPED", "EXITED", "FATAL"}
FAILED = {"FATAL", "BACKOFF"}
LIVE = {"RUNNING", "STARTING"}
QUIET_STATES = {"offline", "maintenance", "drained"}  # up, but not polling for jobs


@dataclass
class Env:
    """What operations act on: supervisord, the state dir and the fleet's settings."""

    supervisor: Supervisor
    layout: Layout
    restart_method: str = "signal"
    restart_dir: str = "/tmp"
    server_url: str | None = None


@dataclass
class Snapshot:
    processes: dict[str, ProcessInfo]
    status_files: dict[str, dict[str, Any] | None]
    now: float
    server_url: str | None = None

    def info(self, name: str) -> ProcessInfo | None:
        return self.processes.get(name)

    def status(self, name: str) -> dict[str, Any] | None:
        """The status file, only if the process running now wrote it."""
        info = self.info(name)
        if not info or not info.pid:
            return None
        return current_status(self.status_files.get(name), info.pid)

    def busy(self, name: str, kind: str) -> tuple[bool, str]:
        """Whether the agent runs a job, and what it is doing, in words."""
        info = self.info(name)
        if not info or info.state not in LIVE:
            return False, (info.state.lower() if info else "not loaded")
        if kind == "tf-agent":
            data = self.status(name)
            if not data:
                return False, "starting"
            if data.get("job_id") or data.get("state") in PHASES:
                since = data.get("since")
                when = time.strftime("%H:%M:%S", time.localtime(since)) if since else "?"
                return True, (
                    f"waiting for job {data.get('job_id')} in phase"
                    f" {data.get('phase') or data.get('state')} since {when}"
                )
            return False, data.get("state") or "idle"
        # Upstream agents write no status file: a running job shows as child processes.
        import psutil  # only here: most commands never need its import time

        try:
            children = psutil.Process(info.pid).children()
        except psutil.Error:
            children = []
        if children:
            return True, f"waiting for its job to end ({len(children)} child process(es))"
        # Between phases an upstream agent talks to the server with no child running;
        # the server knows whether it holds a job.
        job_id = _server_job(self.server_url, name) if self.server_url else None
        if job_id:
            return True, f"waiting for job {job_id} (as the server reports it)"
        return False, "idle"


_SERVER_CACHE: dict[tuple[str, str], tuple[float, str | None]] = {}
SERVER_CACHE_SECONDS = 2.0


def _server_job(server_url: str, name: str) -> str | None:
    """The job the server has for an agent, asked at most every 2 s per agent."""
    key = (server_url, name)
    now = time.monotonic()
    cached = _SERVER_CACHE.get(key)
    if cached and now - cached[0] < SERVER_CACHE_SECONDS:
        return cached[1]
    job_id = triggers.get_server_agent(server_url, name).get("job_id") or None
    _SERVER_CACHE[key] = (now, job_id)
    return job_id


def take_snapshot(env: Env, names: list[str]) -> Snapshot:
    processes = env.supervisor.processes()
    status_files = {n: read_status_file(env.layout.status_file(n)) for n in names}
    return Snapshot(processes, status_files, time.time(), env.server_url)


@dataclass
class Operation:
    name: str
    kind: str  # the agent kind: tf-agent, upstream, server
    stage: str = "queued"
    text: str = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    old_pid: int = 0
    new_pid: int = 0
    error: str | None = None
    result: str = ""
    notes: list[str] = field(default_factory=list)
    on_job: bool = False  # waiting for a running job: nothing will change for a while

    verb = "operation"

    @property
    def done(self) -> bool:
        return self.stage in ("done", "failed")

    @property
    def failed(self) -> bool:
        return self.stage == "failed"

    def begin(self, snap: Snapshot, env: Env) -> None:
        self.started_at = time.monotonic()
        info = snap.info(self.name)
        self.old_pid = info.pid if info else 0

    def step(self, snap: Snapshot, env: Env) -> None:
        raise NotImplementedError

    def finish(self, result: str) -> None:
        self.stage = "done"
        self.finished_at = time.monotonic()
        self.result = result
        self.text = result

    def fail(self, error: str) -> None:
        self.stage = "failed"
        self.finished_at = time.monotonic()
        self.error = error
        self.text = f"FAILED: {error}"

    @property
    def elapsed(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or time.monotonic()) - self.started_at

    # shared steps ---------------------------------------------------------------
    def _failure(self, snap: Snapshot, env: Env) -> str | None:
        """A new process that will not stay up: the reason, with its last log lines.
        EXITED with a non-zero status is the old process between exit and respawn."""
        info = snap.info(self.name)
        if not info:
            return "supervisord no longer knows this program"
        if (
            info.state in FAILED
            or info.state == "STOPPED"
            or (info.state == "EXITED" and info.exitstatus == 0)
        ):
            lines = tail_lines(env.layout.log_file(self.name), 3)
            detail = f"; log: {' | '.join(lines)}" if lines else ""
            why = f", {info.spawnerr}" if info.spawnerr else ""
            return f"did not come back ({info.state}{why}){detail}"
        return None

    def _back(self, snap: Snapshot) -> bool:
        """The new process is up: tf-agent has polled the server (or is up but told not to
        poll); an upstream agent has lived past startsecs."""
        info = snap.info(self.name)
        if not info or not info.pid or info.pid == self.old_pid or info.state not in LIVE:
            return False
        self.new_pid = info.pid
        if self.kind != "tf-agent":
            return info.state == "RUNNING"
        data = snap.status(self.name)
        if not data:
            return False
        started = process_start_time(info.pid) or info.start
        last_poll = data.get("last_poll")
        polled = last_poll is not None and last_poll >= started - 0.05
        return polled or data.get("state") in QUIET_STATES

    def _wait_back(self, snap: Snapshot, env: Env) -> None:
        failure = self._failure(snap, env)
        if failure:
            self.fail(failure)
        elif self._back(snap):
            self.finish(
                f"back in {self.elapsed:.1f}s (pid {self.old_pid or '-'} -> {self.new_pid})"
            )
        else:
            self.text = "restarting"


class SafeRestart(Operation):
    """Ask the agent to exit when idle; supervisord starts it again."""

    verb = "restart"

    def __init__(self, name: str, kind: str, method: str | None = None):
        super().__init__(name, kind)
        self.method = method

    def begin(self, snap: Snapshot, env: Env) -> None:
        super().begin(snap, env)
        info = snap.info(self.name)
        if not info or info.state not in LIVE:
            # Nothing runs, so nothing can be interrupted: just start it.
            env.supervisor.start(self.name, False)
            self.stage = "coming-back"
            self.text = "starting"
        elif info.state == "STARTING":
            # An exit within startsecs counts as a failed start (BACKOFF): ask once RUNNING.
            self.stage = "settling"
            self.text = "waiting for it to finish starting"
        else:
            self._ask(env)

    def _ask(self, env: Env) -> None:
        if (self.method or env.restart_method) == "file":
            triggers.ask_restart_by_file(env.restart_dir, self.name)
        else:
            triggers.ask_restart_by_signal(env.supervisor, self.name)
        self.stage = "asked"

    def step(self, snap: Snapshot, env: Env) -> None:
        info = snap.info(self.name)
        if self.stage == "settling":
            if info and info.state == "RUNNING":
                self.old_pid = info.pid
                self._ask(env)
            elif not info or info.state not in LIVE:
                self.fail(f"did not start ({info.state if info else 'not loaded'})")
            return
        if self.stage == "asked":
            if info and info.pid == self.old_pid and info.state in LIVE:
                self.on_job, self.text = snap.busy(self.name, self.kind)
                if self.text in ("waiting", "idle", "drained"):
                    self.text = "asked; restarting"
                return
            self.on_job = False
            if info and info.state == "EXITED" and info.exitstatus != 0:
                # supervisord would respawn it on its next pass, up to a second away
                try:
                    env.supervisor.start(self.name, False)
                except SupervisorError:
                    pass  # it got there first
            self.stage = "coming-back"
        if self.stage == "coming-back":
            self._wait_back(snap, env)


class SafeStop(Operation):
    """Bring an agent down without touching its job: drain with hold (tf-agent), or
    SIGUSR1 and catch the respawn before it can poll (upstream agents know no hold)."""

    verb = "stop"

    def begin(self, snap: Snapshot, env: Env) -> None:
        super().begin(snap, env)
        info = snap.info(self.name)
        if not info or info.state not in LIVE:
            self.stage = "down"
            return
        if self.kind == "tf-agent":
            triggers.set_drain(env.layout, self.name, triggers.HOLD)
        elif self.kind == "server":
            self.stage = "down-pending"  # the server runs no job: stop it when told
            return
        else:
            triggers.ask_restart_by_signal(env.supervisor, self.name)
        self.stage = "stopping"

    def step(self, snap: Snapshot, env: Env) -> None:
        info = snap.info(self.name)
        if self.stage == "down-pending":
            env.supervisor.stop(self.name, True)
            self.stage = "down"
        if self.stage == "stopping":
            if info and info.pid == self.old_pid and info.state in LIVE:
                self.on_job, self.text = snap.busy(self.name, self.kind)
                if not self.on_job:
                    self.text = "idle; exiting"
                return
            self.on_job = False
            if info and info.state in LIVE:
                # An upstream agent that restarted: stop the new process before it polls.
                try:
                    env.supervisor.stop(self.name, True)
                except SupervisorError as exc:
                    if "NOT_RUNNING" not in str(exc):
                        raise
            self.stage = "down"
        if self.stage == "down":
            self.after_down(snap, env)

    def after_down(self, snap: Snapshot, env: Env) -> None:
        self.finish(f"stopped after {self.elapsed:.1f}s")


class Replace(SafeStop):
    """The program entry changed: stop safely, swap the program, start the new one."""

    verb = "replace"

    def after_down(self, snap: Snapshot, env: Env) -> None:
        info = snap.info(self.name)
        if info and info.state not in DOWN:
            env.supervisor.stop(self.name, True)
        env.supervisor.remove(self.name)
        triggers.clear_drain(env.layout, self.name)
        added, _, _ = env.supervisor.reload_config()
        if self.name not in added:
            raise SupervisorError(f"{self.name}: supervisord did not see its new program")
        env.supervisor.add(self.name)
        self.old_pid = info.pid if info and info.pid else self.old_pid
        self.stage = "coming-back"

    def step(self, snap: Snapshot, env: Env) -> None:
        if self.stage == "coming-back":
            self._wait_back(snap, env)
        else:
            super().step(snap, env)


class Remove(SafeStop):
    """Gone from the fleet file: stop safely, remove the program and the agent's files."""

    verb = "remove"

    def after_down(self, snap: Snapshot, env: Env) -> None:
        info = snap.info(self.name)
        if info:
            if info.state not in DOWN:
                env.supervisor.stop(self.name, True)
            env.supervisor.remove(self.name)
        program_file = env.supervisor.target.program_dir / (
            self.name + env.supervisor.target.program_suffix
        )
        program_file.unlink(missing_ok=True)
        env.supervisor.reload_config()
        for path in (env.layout.status_file(self.name), env.layout.drain_file(self.name)):
            path.unlink(missing_ok=True)
        agent_dir = env.layout.agent_dir(self.name)
        results = agent_dir / "results"
        if results.is_dir() and any(results.iterdir()):
            # Undelivered outcomes are somebody's test results: never delete them.
            self.notes.append(f"kept {results}: it holds undelivered results")
            for child in agent_dir.iterdir():
                if child != results:
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        else:
            shutil.rmtree(agent_dir, ignore_errors=True)
        self.finish(f"removed after {self.elapsed:.1f}s")


class Drain(Operation):
    """Take no new job; done once the agent is idle (it stays up)."""

    verb = "drain"

    def begin(self, snap: Snapshot, env: Env) -> None:
        super().begin(snap, env)
        if self.kind == "tf-agent":
            triggers.set_drain(env.layout, self.name, triggers.DRAIN)
        elif env.server_url:
            triggers.set_server_state(env.server_url, self.name, "offline", "drained by tf-fleet")
        else:
            raise triggers.TriggerError(
                f"{self.name}: an upstream agent can only be drained through its server"
            )
        self.stage = "draining"

    def step(self, snap: Snapshot, env: Env) -> None:
        busy, text = snap.busy(self.name, self.kind)
        info = snap.info(self.name)
        self.on_job = busy
        if busy:
            self.text = text
        elif (
            info
            and info.state in LIVE
            and self.kind == "tf-agent"
            and ((snap.status(self.name) or {}).get("state") != "drained")
        ):
            self.text = "draining"
        else:
            self.finish(f"idle after {self.elapsed:.1f}s")


@dataclass
class RunResult:
    operations: list[Operation]
    timed_out: bool = False
    stopped_early: bool = False  # a failure stopped a rolling operation

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(op.stage == "done" for op in self.operations)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "timed_out": self.timed_out,
            "stopped_early": self.stopped_early,
            "agents": [
                {
                    "name": op.name,
                    "operation": op.verb,
                    "stage": op.stage,
                    "result": op.result or None,
                    "error": op.error,
                    "text": op.text,
                    "seconds": round(op.elapsed, 3) if op.elapsed is not None else None,
                    "old_pid": op.old_pid or None,
                    "new_pid": op.new_pid or None,
                    "notes": op.notes,
                }
                for op in self.operations
            ],
        }


def run(
    operations: list[Operation],
    env: Env,
    *,
    max_parallel: int,
    timeout: float,
    stop_on_failure: bool,
    wait: bool = True,
    tick: float | None = None,
    progress: Callable[[list[Operation]], None] | None = None,
) -> RunResult:
    """Advance the operations until all are done, one fails (if stop_on_failure) or time
    runs out. Idle agents go first, so a busy one never holds up the idle ones."""
    names = [op.name for op in operations]
    # A look costs supervisord a pass over its processes: look often while an agent is
    # about to exit or come back, seldom while every one in flight waits for a job.
    fast = tick if tick is not None else (0.05 if len(names) <= 50 else 0.2)
    queue = list(operations)
    active: list[Operation] = []
    result = RunResult(operations)
    deadline = time.monotonic() + timeout
    while True:
        snap = take_snapshot(env, names)
        for op in list(active):
            try:
                op.step(snap, env)
            except (SupervisorError, triggers.TriggerError, OSError) as exc:
                op.fail(str(exc))
            if op.done:
                active.remove(op)
        if any(op.failed for op in operations) and stop_on_failure:
            result.stopped_early = bool(queue)
            queue.clear()
        if queue and len(active) < max_parallel:
            queue.sort(key=lambda op: snap.busy(op.name, op.kind)[0])  # stable: idle first
            while queue and len(active) < max_parallel:
                op = queue.pop(0)
                try:
                    op.begin(snap, env)
                    op.text = "asked" if op.stage != "coming-back" else op.text
                except (SupervisorError, triggers.TriggerError, OSError) as exc:
                    op.fail(str(exc))
                    if stop_on_failure:
                        break
                    continue
                active.append(op)
            continue  # step the new ones on the next tick's fresh snapshot
        if progress:
            progress(operations)
        if not active and not queue:
            return result
        if not wait and not queue:
            return result  # asked everyone; the rest happens without us
        if time.monotonic() > deadline:
            result.timed_out = True
            return result
        time.sleep(0.5 if active and all(op.on_job for op in active) else fast)
