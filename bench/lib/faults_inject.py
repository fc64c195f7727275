"""The faults the soak injects, each recorded with when it hit, whom, and which jobs were
running on the agents it affected at that moment."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from .faults_fleet import SERVER_PROGRAM, Cmd, SoakFleet
from .faults_proc import agent_name, cmdline, pids

KILL9_AGENT = "kill -9 agent"
KILL9_SUPERVISORD = "kill -9 supervisord, then up"
KILL9_SERVER = "kill -9 server"
SIGTERM_AGENT = "SIGTERM agent, then up"
RESTART_SAFE_ALL = "restart --safe --all"
UP_CHANGED = "up with a changed config"
RUN_DIR_FULL = "run dir full for 10 s"
KINDS = (
    KILL9_AGENT,
    KILL9_SUPERVISORD,
    KILL9_SERVER,
    SIGTERM_AGENT,
    RESTART_SAFE_ALL,
    UP_CHANGED,
    RUN_DIR_FULL,
)
# Faults that end an agent process while it may run a job: the only ones allowed to end
# a job with an agent error (kill -9) or a stop (SIGTERM: cancelled, by design).
KILLS_AGENT = (KILL9_AGENT,)
STOPS_AGENT = (SIGTERM_AGENT,)
# Faults whose command waits for running jobs: carried out in a thread, so that faults
# keep coming every few seconds meanwhile (tf-fleet serialises its own commands).
BACKGROUND = (RESTART_SAFE_ALL, UP_CHANGED)
FULL_SECONDS = 10.0
RUNNING_STATES_EXCLUDED = ("waiting", "complete", "completed", "cancelled")


@dataclass
class Fault:
    number: int
    kind: str
    at: float  # seconds since the soak started
    target: str = ""  # the agent, or "all"
    running: dict[str, list[str]] = field(default_factory=dict)  # agent -> job ids
    commands: list[Cmd] = field(default_factory=list)
    note: str = ""
    substituted: str = ""

    def affected_jobs(self) -> set[str]:
        return {job for jobs in self.running.values() for job in jobs}


class Injector:
    def __init__(self, fleet: SoakFleet, rng: random.Random, started: float, say: Callable):
        self.fleet = fleet
        self.rng = rng
        self.started = started
        self.say = say
        self.faults: list[Fault] = []
        self.full_until = 0.0
        self._timer: threading.Timer | None = None
        self.mount_error: str | None = None
        self.background: list[threading.Thread] = []

    # -- what runs where -------------------------------------------------------------
    def running_on(self, names: list[str]) -> dict[str, list[str]]:
        """Jobs each agent runs now: its job record, and the server's jobs held by it."""
        held: dict[str, set[str]] = {n: set() for n in names}
        try:
            for job_id, job in self.fleet.jobs().items():
                if job["agent"] in held and job["state"] not in RUNNING_STATES_EXCLUDED:
                    held[job["agent"]].add(job_id)
        except Exception:  # noqa: BLE001 - the records below still say something
            pass
        for name in names:
            record = self.fleet.record(name)
            if record and record.get("job_id"):
                held[name].add(str(record["job_id"]))
        return {n: sorted(jobs) for n, jobs in held.items() if jobs}

    def agent_pid(self, name: str) -> int:
        pid = self.fleet.pid_of(name)
        if pid:
            return pid
        for candidate in pids():  # supervisord down: find it on the host
            if agent_name(cmdline(candidate), self.fleet.agents_prefix) == name:
                return candidate
        return 0

    # -- the loop's entry ----------------------------------------------------------------
    def inject(self, kind: str) -> Fault:
        fault = Fault(len(self.faults) + 1, kind, time.monotonic() - self.started)
        if kind == RUN_DIR_FULL and (self.mount_error or self.fleet.filled):
            fault.substituted = kind
            fault.kind = kind = KILL9_AGENT
            fault.note = (
                f"substituted for `{RUN_DIR_FULL}`: "
                + (f"tmpfs not mountable ({self.mount_error})" if self.mount_error else "")
                + ("run dir still full from the previous fault" if self.fleet.filled else "")
                + "; "
            )
        self.faults.append(fault)
        self.say(f"fault {fault.number}: {kind}")
        if kind in BACKGROUND:  # a long command: the next fault does not wait for it
            thread = threading.Thread(target=self._carry_out, args=(fault,), daemon=True)
            self.background.append(thread)
            thread.start()
        else:
            self._carry_out(fault)
        return fault

    def _carry_out(self, fault: Fault) -> None:
        HANDLERS[fault.kind](self, fault)
        if any(c.rc != 0 for c in fault.commands) and not self.fleet.filled:
            fault.commands.append(self.fleet.cli("up"))  # heal, recorded
        self.say(f"fault {fault.number} done: {fault.note} {fault_cmds(fault)}")

    def join(self, timeout: float) -> None:
        """Wait for the faults whose commands run in the background."""
        deadline = time.monotonic() + timeout
        for thread in self.background:
            thread.join(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self.fleet.filled:
            self.fleet.free_run_dir()

    # -- the faults --------------------------------------------------------------------
    def kill9_agent(self, fault: Fault) -> None:
        name = fault.target = self.rng.choice(self.fleet.names)
        fault.running = self.running_on([name])
        pid = self.agent_pid(name)
        if not pid:
            fault.note += "no process to kill"
            return
        _signal(pid, signal.SIGKILL)
        back = self._wait_new_pid(name, pid, 20.0)
        fault.note += f"pid {pid} killed; " + (
            f"supervisord started pid {back[0]} {back[1]:.1f} s later"
            if back
            else "not back within 20 s"
        )
        if not back:
            fault.commands.append(self.fleet.cli("up"))

    def kill9_supervisord(self, fault: Fault) -> None:
        fault.target = "all"
        fault.running = self.running_on(self.fleet.names)
        pid = self.fleet.supervisord_pid()
        if not pid:
            fault.note = "no supervisord"
        else:
            _signal(pid, signal.SIGKILL)
            _wait_gone(pid, 10.0)
            fault.note = f"supervisord pid {pid} killed"
        fault.commands.append(self.fleet.cli("up"))

    def kill9_server(self, fault: Fault) -> None:
        fault.target = SERVER_PROGRAM
        fault.running = self.running_on(self.fleet.names)
        pid = self.fleet.pid_of(SERVER_PROGRAM)
        if not pid:
            fault.note = "no server process under supervisord"
            return
        _signal(pid, signal.SIGKILL)
        back = self._wait_new_pid(SERVER_PROGRAM, pid, 20.0)
        if back and self._server_answers(10.0):
            fault.note = (
                f"server pid {pid} killed; supervisord's autorestart started pid {back[0]}"
                f" {back[1]:.1f} s later (no command needed)"
            )
            return
        fault.note = f"server pid {pid} killed; not back by itself within 20 s, so `up`"
        fault.commands.append(self.fleet.cli("up"))

    def sigterm_agent(self, fault: Fault) -> None:
        name = fault.target = self.rng.choice(self.fleet.names)
        fault.running = self.running_on([name])
        pid = self.agent_pid(name)
        if not pid:
            fault.note = "no process"
            return
        _signal(pid, signal.SIGTERM)
        gone = _wait_gone(pid, 30.0)
        state = (self.fleet.programs().get(name) or {}).get("statename", "?")
        fault.note = f"pid {pid} {'exited' if gone else 'still running after 30 s'}, {state}"
        fault.commands.append(self.fleet.cli("up"))

    def restart_safe_all(self, fault: Fault) -> None:
        fault.target = "all"
        fault.running = self.running_on(self.fleet.names)
        args = ("restart", "--safe", "--all", "--max-parallel", "2", "--timeout", "2m")
        fault.commands.append(self.fleet.cli(*args))

    def up_changed(self, fault: Fault) -> None:
        fleet = self.fleet
        if self.rng.random() < 0.5:
            fault.target = "all"
            fleet.polling_interval = 1.0 if fleet.polling_interval == 0.5 else 0.5
            fault.note = f"polling_interval → {fleet.polling_interval:g} (every agent)"
        else:
            name = fault.target = self.rng.choice(fleet.names)
            fleet.env_gen[name] = fleet.env_gen.get(name, 0) + 1
            fault.note = f"environment TFB_GEN={fleet.env_gen[name]} on {name}"
        names = fleet.names if fault.target == "all" else [fault.target]
        fault.running = self.running_on(names)
        fleet.write()
        fault.commands.append(fleet.cli("up"))

    def run_dir_full(self, fault: Fault) -> None:
        fault.target = "all"
        fault.running = self.running_on(self.fleet.names)
        said = self.fleet.fill_run_dir()
        self.full_until = time.monotonic() + FULL_SECONDS
        fault.note = f"{said}; freed {FULL_SECONDS:g} s later"
        self._timer = threading.Timer(FULL_SECONDS, self.fleet.free_run_dir)
        self._timer.daemon = True
        self._timer.start()

    # -- helpers -------------------------------------------------------------------
    def _wait_new_pid(self, name: str, old: int, timeout: float) -> tuple[int, float] | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            info = self.fleet.programs().get(name) or {}
            if info.get("statename") == "RUNNING" and info.get("pid") not in (0, old):
                return int(info["pid"]), time.monotonic() - t0
            time.sleep(0.05)
        return None

    def _server_answers(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.fleet.url}/v1", timeout=2).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.1)
        return False


HANDLERS: dict[str, Callable[[Injector, Fault], None]] = {
    KILL9_AGENT: Injector.kill9_agent,
    KILL9_SUPERVISORD: Injector.kill9_supervisord,
    KILL9_SERVER: Injector.kill9_server,
    SIGTERM_AGENT: Injector.sigterm_agent,
    RESTART_SAFE_ALL: Injector.restart_safe_all,
    UP_CHANGED: Injector.up_changed,
    RUN_DIR_FULL: Injector.run_dir_full,
}


def fault_cmds(fault: Fault) -> str:
    return "; ".join(c.short() + (f" ({c.tail})" if c.rc else "") for c in fault.commands)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False
