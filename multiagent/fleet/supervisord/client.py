"""The only module that talks to supervisord: start it, and XML-RPC over its unix socket."""

from __future__ import annotations

import base64
import configparser
import glob
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multiagent import jsonio
from multiagent.fleet.errors import UserError
from multiagent.fleet.model.facts import ProcessInfo, ProcessState
from multiagent.fleet.model.fleetfile import Fleet
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.supervisord import plugin
from multiagent.fleet.supervisord.xmlrpc_wire import Channel, Fault


class Faults:
    """supervisord's fault codes (supervisor.xmlrpc.Faults; importing that module costs
    command start-up time for a table of numbers), plus UNREACHABLE for no answer."""

    UNKNOWN_METHOD = 1
    INCORRECT_PARAMETERS = 2
    BAD_ARGUMENTS = 3
    SIGNATURE_UNSUPPORTED = 4
    SHUTDOWN_STATE = 6
    BAD_NAME = 10
    BAD_SIGNAL = 11
    NO_FILE = 20
    NOT_EXECUTABLE = 21
    FAILED = 30
    ABNORMAL_TERMINATION = 40
    SPAWN_ERROR = 50
    ALREADY_STARTED = 60
    NOT_RUNNING = 70
    SUCCESS = 80
    ALREADY_ADDED = 90
    STILL_RUNNING = 91
    CANT_REREAD = 92
    UNREACHABLE = -1  # ours: nothing listens on the socket
    CONFIG = -2  # ours: supervisord or its config cannot be used as it is
    UNRESPONSIVE = -3  # ours: it listens, but gave no answer within the call's bound


# How long one call to supervisord may go unanswered (a command's --timeout, if shorter,
# bounds it further): its slowest calls answer in well under a second with 500 agents.
CALL_SECONDS = 5.0
# A stop or start waited for (polled, each look bounded) ends within stopwaitsecs or
# startsecs; this caps the wait should supervisord keep a process in between.
SETTLE_CAP_SECONDS = 3600.0
# A supervisord we just started, still spawning its programs (its log growing), is
# waited for this long at most before it counts as wedged.
SPAWN_CAP_SECONDS = 600.0
# The private supervisord: supervisor's, with a parser of its included files that does not
# grow with the square of their number (launch.py says by how much).
LAUNCHER = "multiagent.fleet.supervisord.launch"


class SupervisorError(UserError):
    """A refusal or a failure of supervisord; `code` is one of `Faults`."""

    def __init__(self, message: str, code: int = Faults.CONFIG, name: str | None = None):
        super().__init__(message)
        self.code = code
        self.name = name


@dataclass(frozen=True)
class SupervisorTarget:
    """Where a fleet's supervisord listens and where its program files go."""

    mode: str
    socket_url: str  # unix:///path or http://host:port
    config: Path
    program_dir: Path
    program_suffix: str
    auth: str | None = None  # base64 user:password from [supervisorctl], if it has one
    # Every file pattern of the [include] section, absolute: where other programs live.
    include_patterns: tuple[str, ...] = ()
    pid_file: Path | None = None  # supervisord's pidfile, to say what state it is in

    def program_file(self, name: str) -> Path:
        return self.program_dir / f"{name}{self.program_suffix}"


def target_for(fleet: Fleet) -> SupervisorTarget:
    layout = Layout(fleet.state_dir)
    if fleet.supervisor.mode == "private":
        return SupervisorTarget(
            "private",
            f"unix://{layout.socket}",
            layout.supervisord_conf,
            layout.private_program_dir,
            ".conf",
            pid_file=layout.pid_file,
        )
    return read_system_config(Path(fleet.supervisor.config or ""))


def read_system_config(config: Path) -> SupervisorTarget:
    """Find the socket and the include directory of a host's supervisord.conf."""
    parser = configparser.RawConfigParser(strict=False, inline_comment_prefixes=(";", "#"))
    try:
        with open(config) as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error) as exc:
        raise SupervisorError(
            f"{config}: cannot read the system supervisord config: {exc}"
        ) from exc
    here = str(config.parent)

    def value(section: str, key: str) -> str | None:
        if parser.has_option(section, key):
            return parser.get(section, key).replace("%(here)s", here).strip()
        return None

    socket_url = value("supervisorctl", "serverurl")
    if not socket_url:
        socket_file = value("unix_http_server", "file")
        if not socket_file:
            raise SupervisorError(
                f"{config}: no [unix_http_server] file= and no"
                " [supervisorctl] serverurl=: tf-fleet cannot reach it"
            )
        socket_url = f"unix://{socket_file}"
    includes = (value("include", "files") or "").split()
    if not includes:
        raise SupervisorError(
            f"{config}: no [include] files= section; add one (for example"
            " `files = /etc/supervisor/conf.d/*.conf`) so tf-fleet can add"
            " programs"
        )
    pattern = includes[0] if os.path.isabs(includes[0]) else os.path.join(here, includes[0])
    directory, name_glob = os.path.split(pattern)
    if glob.has_magic(directory) or not name_glob.startswith("*"):
        raise SupervisorError(
            f"{config}: [include] files={includes[0]} must be of the form"
            " DIR/*.conf for tf-fleet to place programs in it"
        )
    suffix = name_glob[1:] or ".conf"
    user, password = value("supervisorctl", "username"), value("supervisorctl", "password")
    auth = base64.b64encode(f"{user}:{password or ''}".encode()).decode() if user else None
    patterns = tuple(p if os.path.isabs(p) else os.path.join(here, p) for p in includes)
    pid_file = value("supervisord", "pidfile")
    return SupervisorTarget(
        "system",
        socket_url,
        config,
        Path(directory),
        suffix,
        auth,
        patterns,
        Path(pid_file) if pid_file else None,
    )


class Supervisor:
    """One client of a supervisord. Every call is bounded by `timeout` (a socket timeout,
    no thread); once a call went unanswered, every later one fails at once with the same
    error rather than waiting again."""

    def __init__(self, target: SupervisorTarget, timeout: float = CALL_SECONDS):
        self.target = target
        self.timeout = max(0.1, min(timeout, CALL_SECONDS))
        self._channel: Channel | None = None
        self._silent: SupervisorError | None = None
        self._ahead: _Ahead | None = None
        self._plain_only = False  # no plugin in this supervisord: getAllProcessInfo

    def ask_ahead(self) -> None:
        """Ask now, in a thread, whether supervisord runs and for every process: the next
        is_running() and processes() take those answers (once) instead of asking. For 500
        programs supervisord takes ~0.25 s to build its answer, on another core while the
        command reads its own files (`status` and a no-change `up`, bench/)."""
        if self._ahead is None:
            self._ahead = _Ahead(Supervisor(self.target, self.timeout))

    def _connected(self) -> Channel:
        if self._channel is None:
            self._channel = Channel(self.target.socket_url, self.target.auth, self.timeout)
        return self._channel

    def _call(self, method: str, *args: Any) -> Any:
        name = args[0] if args and isinstance(args[0], str) else None
        what = f"{method}({name})" if name else method
        if self._silent is not None:
            raise self._silent
        if self._ahead is not None and method not in ("getState", "getPID"):
            self._ahead = None  # a call that may change what it saw: its answers are old
        qualified = method if "." in method else f"supervisor.{method}"
        try:
            return self._connected().call(qualified, *args)
        except Fault as fault:
            raise SupervisorError(
                f"supervisord refused {what}: {fault.text}", fault.code, name
            ) from fault
        except TimeoutError as exc:
            self._channel = None
            self._silent = SupervisorError(self._silence(), Faults.UNRESPONSIVE, name)
            raise self._silent from exc
        except (OSError, ValueError) as exc:
            self._channel = None
            raise SupervisorError(
                f"supervisord is not reachable at {self.target.socket_url}: {exc}",
                Faults.UNREACHABLE,
                name,
            ) from exc

    def _silence(self) -> str:
        """The error of a call that got no answer: who, where, and what state it is in."""
        pid = _read_pid(self.target.pid_file)
        who = f"supervisord (pid {pid}, {_pid_state(pid)})" if pid else "supervisord"
        return (
            f"{who} does not answer on {self.target.socket_url} within {self.timeout:g} s:"
            " stopped or wedged"
        )

    def is_running(self) -> bool:
        """Whether supervisord answers and runs; an unanswered call is an error, not a no
        (a new supervisord beside a wedged one would start every agent twice)."""
        if self._ahead is not None and not self._ahead.running_taken:
            try:
                return self._ahead.take_running()
            except SupervisorError as exc:  # only UNRESPONSIVE: the other errors are a no
                self._silent = exc
                raise
        try:
            return self._call("getState")["statename"] == ProcessState.RUNNING
        except SupervisorError as exc:
            if exc.code == Faults.UNRESPONSIVE:
                raise
            return False

    def processes(self) -> dict[str, ProcessInfo]:
        """Every process in one call."""
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            found = ahead.take_processes()
            if found is not None:
                return found
        if self.target.mode == "private" and not self._plain_only:
            try:
                text = self._call(plugin.ALL_PROCESS_INFO)
            except SupervisorError as exc:
                if exc.code != Faults.UNKNOWN_METHOD:
                    raise
                self._plain_only = True  # started without the plugin (an older tf-fleet)
            else:
                return {info["name"]: ProcessInfo.from_rpc(info) for info in jsonio.loads(text)}
        return {
            info["name"]: ProcessInfo.from_rpc(info) for info in self._call("getAllProcessInfo")
        }

    def processes_named(self, names: list[str]) -> dict[str, ProcessInfo]:
        """The processes of these names in one call (a multicall of getProcessInfo): for
        a few agents of a big fleet, a fraction of supervisord's work for every process's
        info. A name supervisord does not know is left out, as with processes()."""
        found: dict[str, ProcessInfo] = {}
        for name, answer in self._each("getProcessInfo", names):
            code = _fault(answer)
            if code == Faults.BAD_NAME:
                continue
            if code is not None:
                raise SupervisorError(
                    f"supervisord refused getProcessInfo({name}): {answer.get('faultString')}",
                    code,
                    name,
                )
            found[answer["name"]] = ProcessInfo.from_rpc(answer)
        return found

    def process(self, name: str) -> ProcessInfo:
        return ProcessInfo.from_rpc(self._call("getProcessInfo", name))

    def reload_config(self) -> tuple[list[str], list[str], list[str]]:
        """Re-read the program files; returns (added, changed, removed) without acting."""
        added, changed, removed = self._call("reloadConfig")[0]
        return added, changed, removed

    def add(self, name: str) -> None:
        self._call("addProcessGroup", name)

    def remove(self, name: str) -> None:
        self._call("removeProcessGroup", name)

    def start(self, name: str, wait: bool = False) -> None:
        """Start `name`; with `wait`, until it is RUNNING (past startsecs) or failed.
        supervisord's own wait would hold the call open that long: it is polled instead,
        so each call stays bounded."""
        self._call("startProcess", name, False)
        if not wait:
            return
        info = self._settled(name, (ProcessState.STARTING,))
        if info.state != ProcessState.RUNNING:
            code = Faults.SPAWN_ERROR if info.spawnerr else Faults.ABNORMAL_TERMINATION
            why = info.spawnerr or info.description or info.state.lower()
            raise SupervisorError(f"supervisord could not start {name}: {why}", code, name)

    def stop(self, name: str, wait: bool = True) -> None:
        """Stop `name`; with `wait`, until it is down (polled, as for start)."""
        self._past_exec(name)
        self._call("stopProcess", name, False)
        if wait:
            self._settled(name, (ProcessState.STOPPING, *ProcessState.LIVE, ProcessState.BACKOFF))

    def _settled(self, name: str, passing: tuple[str, ...]) -> ProcessInfo:
        deadline = time.monotonic() + SETTLE_CAP_SECONDS
        while True:
            info = self.process(name)
            if info.state not in passing:
                return info
            if time.monotonic() > deadline:
                raise SupervisorError(
                    f"{name}: still {info.state} after {SETTLE_CAP_SECONDS:.0f} s",
                    Faults.FAILED,
                    name,
                )
            time.sleep(0.02)

    def _past_exec(self, name: str, limit: float = 2.0) -> None:
        """Wait (at most `limit`) until `name` is not about to be respawned and its process
        runs its own command. supervisord's child between fork and exec takes a signal
        with the handlers it inherited and drops it: a stop asked in that window is lost,
        and supervisord waits stopwaitsecs before SIGKILL. A stop asked just after an agent
        exited to restart lands in the very pass of supervisord's loop that respawns it."""
        deadline = time.monotonic() + limit
        parent: bytes | None = None
        while time.monotonic() < deadline:
            try:
                info = self.process(name)
            except SupervisorError:
                return  # not loaded, or no supervisord: stopProcess says so itself
            respawning = info.state == ProcessState.BACKOFF or (
                info.state == ProcessState.EXITED and info.exitstatus != 0
            )
            if not respawning and not (info.state == ProcessState.STARTING and info.pid):
                return
            if info.state == ProcessState.STARTING:
                if parent is None:
                    parent = _cmdline(self.pid())
                if _cmdline(info.pid) != parent:
                    return  # exec'd (or gone): a signal now reaches the program
            time.sleep(0.01)

    def stop_many(self, names: list[str]) -> dict[str, int]:
        """Ask for every one of `names` to stop, without waiting, in one request (one pass
        of supervisord's main loop, not one per name, which with a few hundred agents is
        the difference between 0.02 s and 2 s). Returns the fault code of each name it
        refused."""
        refused = {name: _fault(answer) for name, answer in self._each("stopProcess", names, False)}
        return {name: code for name, code in refused.items() if code is not None}

    def _each(self, method: str, names: list[str], *params: Any) -> list[tuple[str, Any]]:
        """supervisor.`method`(name, *params) for every name in one request
        (system.multicall); (name, answer) pairs, where a refusal's answer is a fault."""
        calls = [{"methodName": f"supervisor.{method}", "params": [n, *params]} for n in names]
        answers = self._call("system.multicall", calls) if calls else []
        return list(zip(names, answers, strict=True))

    def signal(self, name: str, signame: str) -> None:
        self._call("signalProcess", name, signame)

    def shutdown(self) -> None:
        self._call("shutdown")

    def pid(self) -> int:
        return int(self._call("getPID"))


def _fault(answer: Any) -> int | None:
    """The fault code of one multicall answer; None for a result."""
    return answer["faultCode"] if isinstance(answer, dict) and "faultCode" in answer else None


def _read_pid(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


# /proc/<pid>/stat's state letters that explain a silent supervisord.
_PID_STATES = {
    "T": "stopped by a signal",
    "t": "stopped by a debugger",
    "D": "waiting on a device or a file system",
    "Z": "exited, not yet reaped",
    "R": "running",
    "S": "running",
}


def _pid_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return "no such process"
    letter = stat[stat.rindex(")") + 2 :].split()[0]
    return _PID_STATES.get(letter, f"state {letter}")


class _Ahead:
    """is_running() and processes() of another client of the same supervisord, asked in a
    thread; their answers (or errors) are taken by the waiting command."""

    def __init__(self, client: Supervisor):
        import threading

        self.client = client
        self.running_taken = False
        self._running: bool | SupervisorError = False
        self._processes: dict[str, ProcessInfo] | SupervisorError | None = None
        self._thread = threading.Thread(target=self._ask, daemon=True)
        self._thread.start()

    def _ask(self) -> None:
        try:
            running = self.client.is_running()
        except SupervisorError as exc:
            self._running = exc
            return
        self._running = running
        if running:
            try:
                self._processes = self.client.processes()
            except SupervisorError as exc:
                self._processes = exc

    def take_running(self) -> bool:
        self._thread.join()
        self.running_taken = True
        answer = self._running
        if isinstance(answer, SupervisorError):
            raise answer
        return bool(answer)

    def take_processes(self) -> dict[str, ProcessInfo] | None:
        """None: supervisord did not answer that it runs (the caller asks again)."""
        self._thread.join()
        answer = self._processes
        if isinstance(answer, SupervisorError):
            raise answer
        return answer


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def start_private(layout: Layout, timeout: float = 15.0) -> int:
    """Start the fleet's own supervisord and wait until it answers; returns its pid."""
    layout.supervisor_dir.mkdir(parents=True, exist_ok=True)
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    if len(str(layout.socket)) > 100:
        raise SupervisorError(
            f"the state dir path is too long for a unix socket"
            f" ({layout.socket}); choose a shorter state_dir"
        )
    proc = subprocess.run(
        [sys.executable, "-m", LAUNCHER, "-c", str(layout.supervisord_conf)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise SupervisorError("supervisord did not start: " + (proc.stderr or proc.stdout).strip())
    target = SupervisorTarget(
        "private",
        f"unix://{layout.socket}",
        layout.supervisord_conf,
        layout.private_program_dir,
        ".conf",
    )
    supervisor = Supervisor(target)
    # supervisord answers no call until it has spawned every autostart program (about
    # 17 s for 500 on a loaded 2-core host): while its log grows it is busy, not wedged.
    start = time.monotonic()
    deadline, logged = start + timeout, _size(layout.supervisord_log)
    while time.monotonic() < deadline:
        try:
            if supervisor.is_running():
                return supervisor.pid()
        except SupervisorError as exc:
            if exc.code != Faults.UNRESPONSIVE:
                raise
            supervisor = Supervisor(target)  # just started, and slow: ask again
        size = _size(layout.supervisord_log)
        if size != logged:
            logged = size
            deadline = min(max(deadline, time.monotonic() + timeout), start + SPAWN_CAP_SECONDS)
        time.sleep(0.05)
    raise SupervisorError(
        f"supervisord did not answer on {layout.socket} within {timeout:.0f}"
        f" s; see {layout.supervisord_log}"
    )
