"""A fleet in a temp dir, driven through the real `tf-fleet` command and a real supervisord."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psutil
import pytest
import requests
import yaml
from fixtures_server import free_port, pause_after, wait_for, without_coverage

from multiagent.fleet.model.facts import ProcessState
from multiagent.fleet.model.fleetfile import FleetError, load_fleet
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.supervisord.client import Supervisor, SupervisorError, target_for

# Test doubles run no code of the package: the suite's coverage (started in every Python
# subprocess that has its variables) is left out of them.
NO_COVERAGE = "env -u COVERAGE_PROCESS_CONFIG -u COVERAGE_PROCESS_START"
# A stand-in agent for tests that only need a long-lived process: it accepts the
# `-c CONF` tf-fleet appends to upstream-style commands and exits 0 on SIGTERM.
SLEEPER = f"{NO_COVERAGE} {sys.executable} -c 'import signal,sys,time; signal.signal(15, lambda *a: sys.exit(0)); time.sleep(1e9)'"  # noqa: E501


UPSTREAM_LIKE = f"{NO_COVERAGE} {sys.executable} {Path(__file__).parent / 'upstream_like_agent.py'}"
DONE_STATES = ("complete", "completed", "cancelled")
_gates = itertools.count(1)
PHASES = ("setup", "provision", "firmware_update", "test", "allocate", "reserve", "cleanup")


class FleetEnv:
    def __init__(self, root: Path):
        self.root = root
        self.fleet_file = root / "fleet.yaml"
        self.state_dir = root / "state"
        self.port = free_port()
        self.server_url = f"http://127.0.0.1:{self.port}"
        self.gates: dict[str, Path] = {}

    def agent_fleet(
        self, names: list[str], queues: dict[str, list[str]] | None = None, **defaults: Any
    ) -> dict[str, Any]:
        """tf-agents with the local connector against an embedded server on a free port.
        The connector runs without the suite's coverage: tests of the agent measure it."""
        connector = (
            f"{NO_COVERAGE} tf-local-connector {{phase}} -c {{agent_dir}}/default.yaml"
            " testflinger.json"
        )
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

    def upstream_fleet(
        self, names: list[str], queues: dict[str, list[str]] | None = None, **defaults: Any
    ) -> dict[str, Any]:
        """Upstream-like agents (tests/upstream_like_agent.py): no status file, no drain
        flag, SIGUSR1 acted on at the next poll, the job a child process. Polling every
        0.5 s: what waits for the next poll waits half as long as at 1 s."""
        defaults.setdefault("polling_interval", 0.5)
        fleet = self.agent_fleet(names, queues, agent_command=UPSTREAM_LIKE, **defaults)
        for key in ("setup_command", "cleanup_command", "device"):
            fleet["defaults"].pop(key)
        return fleet

    def start(self, fleet: dict[str, Any]) -> dict[str, int]:
        """Write the fleet, `up`, wait until every agent runs (and tf-agents polled);
        returns the agents' pids."""
        self.up(fleet)

        upstream = fleet["defaults"].get("agent_command") == UPSTREAM_LIKE

        def reported(name: str) -> bool:
            # Read straight from the files and the server: `status` (a whole tf-fleet
            # process per look) is for what the tests assert, not for set-up.
            if not upstream:
                data = self.status_file(name)
                return bool(data.get("last_poll"))
            try:  # an upstream-like agent writes no status file: its server's view
                answer = requests.get(f"{self.server_url}/v1/agents/data/{name}", timeout=5)
                return answer.ok and bool(answer.json().get("state"))
            except (requests.RequestException, ValueError):
                return False

        self.wait_for(lambda: all(reported(n) for n in fleet["agents"]), what="every agent to poll")
        return self.wait_all_running()

    def pids(self) -> dict[str, int]:
        """Each agent's pid, as `status` shows it (0 for a process that does not run)."""
        return {name: row["pid"] for name, row in self.status().items()}

    def wait_all_running(self, names: list[str] | None = None) -> dict[str, int]:
        """Wait until supervisord runs every agent of the fleet file (or those `names`);
        their pids. Asked in this process: `status` is for what tests assert, and a whole
        tf-fleet process per look kept a core busy while set-ups waited."""

        def running() -> dict[str, int] | None:
            try:
                fleet = load_fleet(self.fleet_file)
                processes = Supervisor(target_for(fleet)).processes()
            except (FleetError, SupervisorError, OSError):
                return None
            chosen = {n: processes.get(n) for n in (names or list(fleet.agents))}
            if chosen and all(p and p.state == ProcessState.RUNNING for p in chosen.values()):
                return {name: p.pid for name, p in chosen.items() if p}
            return None

        pids: dict[str, int] = self.wait_for(running, what="every agent to run")
        return pids

    def status_file(self, name: str) -> dict[str, Any]:
        try:
            return json.loads(Layout(self.state_dir).status_file(name).read_text())
        except (OSError, ValueError):
            return {}

    def agent_processes(self, name: str | None = None) -> list[psutil.Process]:
        """Every process on the host running an agent of this fleet (whoever started it),
        found by the agent config path on its command line."""
        found = []
        for pid, agent in agent_pids(self.state_dir):
            if name is None or agent == name:
                try:
                    found.append(psutil.Process(pid))
                except psutil.NoSuchProcess:
                    pass
        return found

    def same_process_until_done(
        self, name: str, pid: int, job_id: str, timeout: float = 60
    ) -> None:
        """Until `job_id` ends on the server, at every look the one process on the host
        running agent `name` is `pid`: nothing restarted, stopped or doubled it mid-job."""

        def job_over() -> bool:
            before = self.job_state(job_id)
            pids = [proc.pid for proc in self.agent_processes(name)]
            after = self.job_state(job_id)
            if after not in DONE_STATES:  # the job ran for the whole look
                assert pids == [pid], f"{name} ran {pids} mid-job (was {pid}), job {after}"
            return before in DONE_STATES

        self.wait_for(job_over, timeout, f"job {job_id} to end")

    def log(self, name: str) -> str:
        """An agent's log as supervisord wrote it."""
        path = self.state_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def supervisord_log(self) -> str:
        path = self.state_dir / "supervisor" / "supervisord.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def submit(self, queue: str, seconds: float, commands: str | None = None) -> str:
        job: dict[str, Any] = {
            "job_queue": queue,
            "test_data": {"test_cmds": commands or f"echo working; sleep {seconds}; echo ok"},
        }
        resp = requests.post(f"{self.server_url}/v1/job", json=job, timeout=10)
        resp.raise_for_status()
        return resp.json()["job_id"]

    def submit_held(self, queue: str) -> str:
        """A job whose test phase runs until the test calls `release(job)`: in flight for
        exactly as long as the test needs it, instead of a guessed number of seconds."""
        gate = self.root / f"release-{next(_gates)}"
        wait = f"while [ ! -e {gate} ]; do sleep 0.05; done"
        job = self.submit(queue, 0, f"echo working; {wait}; echo ok")
        self.gates[job] = gate
        return job

    def hold_running(self, queue: str) -> str:
        """A held job (`submit_held`), once it runs its test phase."""
        job = self.submit_held(queue)
        self.wait_running(job)
        return job

    def release(self, *jobs: str) -> None:
        for job in jobs:
            self.gates[job].touch()

    def run_releasing(
        self,
        *args: str,
        jobs: list[str],
        when: str | Callable[[str], bool] = "waiting for",
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """`run(*args)` while held `jobs` are in flight: they are released once tf-fleet's
        output so far (stdout and stderr) contains `when` (or `when(output)` is true), that
        is once it is seen waiting on them; at the latest when it exits. Fails if the
        output never did."""
        ready = when if callable(when) else (lambda text: when in text)
        proc = self.started(*args)
        out: list[str] = []
        err: list[str] = []
        readers = [
            threading.Thread(target=lambda s=s, b=b: b.extend(s), daemon=True)
            for s, b in ((proc.stdout, out), (proc.stderr, err))
        ]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + timeout
        released = False
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if not released and ready("".join(out) + "".join(err)):
                    self.release(*jobs)
                    released = True
                time.sleep(0.02)
            if proc.poll() is None:
                proc.kill()
                raise AssertionError(f"tf-fleet {' '.join(args)} still ran after {timeout} s")
        finally:
            self.release(*jobs)
            for reader in readers:
                reader.join(10)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, "".join(out), "".join(err))
        if check and proc.returncode != 0:
            raise AssertionError(
                f"tf-fleet {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        assert released or ready(done.stdout + done.stderr), (
            f"tf-fleet {' '.join(args)} never printed {when!r} while the jobs ran:\n"
            f"{done.stdout}{done.stderr}"
        )
        return done

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
            lambda: self.job_state(job_id) in DONE_STATES,
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

    def up(
        self, fleet: dict[str, Any], *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Write `fleet` as the fleet file, then `tf-fleet up *args`."""
        self.write(fleet)
        return self.run("up", *args, check=check)

    def write(self, fleet: dict[str, Any]) -> None:
        fleet.setdefault("state_dir", str(self.state_dir))
        self.fleet_file.write_text(yaml.safe_dump(fleet, sort_keys=False))

    def command(self, *args: str) -> list[str]:
        """tf-fleet with this fleet's file, as a user runs it."""
        return [sys.executable, "-m", "multiagent", "-c", str(self.fleet_file), *args]

    def started(self, *args: str) -> subprocess.Popen[str]:
        """tf-fleet ARGS running in the background, its stdout and stderr piped."""
        return subprocess.Popen(
            self.command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.root,
        )

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(*args),
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

    def ctl_command(self) -> list[str]:
        """supervisorctl for this fleet's own supervisord."""
        conf = self.state_dir / "supervisor" / "supervisord.conf"
        return [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf)]

    def ctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """supervisorctl runs no code of the package: without the suite's coverage."""
        return subprocess.run(
            [*self.ctl_command(), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
            env=without_coverage(),
        )

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
        return wait_until(predicate, timeout, what)

    def hold_for(self, seconds: float, predicate, what: str) -> int:
        """`predicate` holds at every look for `seconds`, the last look after the window
        closed: for "nothing happened", observe the thing that would have happened over
        the whole window."""
        deadline = time.monotonic() + seconds
        looks = 0
        while True:
            # at least three looks however slow each is (a loaded host), the last after
            # the window closed
            closed = time.monotonic() >= deadline and looks >= 2
            began = time.monotonic()
            assert predicate(), f"{what}: broken after {looks} look(s)"
            looks += 1
            if closed:
                break
            time.sleep(pause_after(began, 0.1))
        assert looks >= 3, looks
        return looks

    def cleanup(self) -> None:
        """After the test (what `down` does has tests of its own): SIGKILL to this fleet's
        supervisord first, so that it respawns nothing, then to everything below it and
        every process whose command line names this test's own directory, whoever its
        parent is now (a test may have killed supervisord)."""
        kill(self.processes()[:1])
        kill([*self.processes(), *self.own_processes()])

    def own_processes(self) -> list[psutil.Process]:
        return processes_naming(self.root)


def processes_naming(root: Path) -> list[psutil.Process]:
    """Every process (but this one) whose command line names a path below `root`."""
    mark = str(root) + "/"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid != os.getpid() and any(mark in w for w in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def kill(procs: list[psutil.Process]) -> None:
    """SIGKILL to each of `procs` still there."""
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def agent_pids(state_dir: Path) -> list[tuple[int, str]]:
    """(pid, agent name) of every live process on the host whose command line names an
    agent config of the fleet in `state_dir`. Read straight from /proc: a zombie's command
    line is empty, so only live processes count. (psutil's process_iter costs about four
    times as much CPU per look, and the samplers look every 50 ms.) A child the agent has
    forked for a phase's command carries the agent's command line until its exec: it holds
    no name and is left out."""
    marker = os.fsencode(state_dir / "agents") + b"/"
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                words = fh.read().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        for word in words:
            if word.startswith(marker) and word.endswith(b"/testflinger-agent.conf"):
                found.append((int(entry.name), os.fsdecode(word[len(marker) :].split(b"/")[0])))
    names: dict[int | None, str] = dict(found)
    return [(pid, name) for pid, name in found if names.get(_parent_pid(pid)) != name]


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Wait for an event with a deadline; returns the predicate's first truthy value."""
    return wait_for(predicate, timeout, step=0.1, what=what)


class ProcessSampler:
    """Watches one agent name per process while a test runs (the promise: one process per
    agent name, never two).

    Sampling alone cannot prove "never two" (two processes could overlap between looks),
    so `assert_never_two` proves it from records with an order: supervisord logs each
    `spawned: 'NAME' with pid N` after the fork and each `exited:`/`stopped: NAME` after
    reaping, so per name these must alternate; every pid that ever logged tf-agent's
    `starting as NAME (pid N)` (it holds the name's lock by then) must be one supervisord
    spawned; and every agent process the sampler saw on the host, whoever started it,
    must be one of those too (no process outside supervisord holds a name)."""

    def __init__(self, env: FleetEnv, interval: float = 0.05):
        import threading

        self.env = env
        self.interval = interval
        self.most: dict[str, int] = {}
        self.seen: dict[str, set[int]] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            counts: dict[str, int] = {}
            found = agent_pids(self.env.state_dir)
            for pid, name in found:
                self.seen.setdefault(name, set()).add(pid)
            # A look reads /proc one pid after the other: an agent read early may have
            # exited and its successor started before the successor is read. Two count
            # only if both still run once the look is over, i.e. at one same moment.
            names = [name for _, name in found]
            if len(set(names)) < len(names):
                found = [p for p in agent_pids(self.env.state_dir) if p in found]
            for _, name in found:
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

    def pids(self, name: str) -> set[int]:
        """Every pid that ran agent `name` at some look."""
        return self.seen.get(name, set())

    def assert_never_two(self) -> None:
        assert self.samples > 5
        assert self.most and max(self.most.values()) == 1, self.most
        spawned = supervisord_lifetimes(self.env.supervisord_log())
        for name, pids in self.seen.items():
            assert pids <= set(spawned.get(name, [])), (name, pids, spawned.get(name))
            held = {
                int(pid)
                for pid in re.findall(rf"starting as {name} \(pid (\d+)\)", self.env.log(name))
            }
            if "tf-agent" in self.env.log(name):
                assert held, f"{name}: no `starting as` line in its log"
            assert held <= set(spawned[name]), (name, held, spawned[name])


def supervisord_lifetimes(log: str) -> dict[str, list[int]]:
    """The pids supervisord spawned per program, in order, checking from its log that each
    one had ended (`exited:`/`stopped:`) before the next was spawned."""
    spawned: dict[str, list[int]] = {}
    alive: dict[str, int | None] = {}
    event = re.compile(
        r" (?:INFO|WARN|CRIT) (spawned|exited|stopped): '?([\w.-]+?)'?(?: with pid (\d+)| \()"
    )
    for line in log.splitlines():
        match = event.search(line)
        if not match:
            continue
        kind, name, pid = match.groups()
        if kind == "spawned":
            assert alive.get(name) is None, f"{name}: pid {pid} spawned while {alive[name]} ran"
            alive[name] = int(pid)
            spawned.setdefault(name, []).append(int(pid))
        else:
            alive[name] = None
    return spawned


class CleansUp(Protocol):
    def cleanup(self) -> None: ...


Made = TypeVar("Made", bound=CleansUp)


def in_short_tmp_dir(prefix: str, make: Callable[[Path], Made]) -> Iterator[Made]:
    """For a fixture: `make(root)` in a new directory with a short path (a supervisord
    socket lives below it, and a unix socket's path is short); after the test its
    `cleanup()`, then the directory is removed unless TF_FLEET_KEEP_TMP=1."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    made = make(root)
    try:
        yield made
    finally:
        made.cleanup()
        if os.environ.get("TF_FLEET_KEEP_TMP") != "1":
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fleet_env() -> Iterator[FleetEnv]:
    yield from in_short_tmp_dir("tff-", FleetEnv)
