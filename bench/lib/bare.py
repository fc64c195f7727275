"""A bare supervisord (no tf-fleet) in the bench's temp dir: the baselines' host."""

from __future__ import annotations

import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from . import breakdown
from .breakdown import Start
from .common import Reaper, alive, supervisorctl_cmd, timed_run, wait_for
from .fleet import rpc_proxy

CONF = """\
[unix_http_server]
file={root}/bare.sock
chmod=0700

[supervisord]
logfile={root}/supervisord.log
pidfile={root}/supervisord.pid
childlogdir={root}
directory={root}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{root}/bare.sock
"""

PROGRAM = """
[program:{name}]
command={command}
autostart=true
autorestart=unexpected
exitcodes=0
startsecs={startsecs}
stdout_logfile={root}/{name}.log
redirect_stderr=true
"""

# A bare interpreter that only sleeps, as supervisord's command line: without site, as
# tf-agent's program starts.
SLEEPER_COMMAND = f"{sys.executable} -S -c 'import time; time.sleep(1e9)'"

# A bare program that writes "<pid> <epoch>" to a file as it starts and exits 1 on
# SIGUSR1: the floor of a restart asked straight of a program that supervisord respawns.
RESPAWNER = """\
import os, signal, sys, time
path = sys.argv[1]
with open(path + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {time.time()!r}")
os.replace(path + ".tmp", path)
signal.signal(signal.SIGUSR1, lambda *_: os._exit(1))
while True:
    signal.pause()
"""


class BareSupervisor:
    """supervisord with `programs` (name -> command line), started and stopped the way the
    baselines need; every pid it ran is handed to the reaper."""

    def __init__(self, root: Path, programs: dict[str, str], reaper: Reaper, startsecs: int = 1):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.names = list(programs)
        self.reaper = reaper
        self.conf = root / "supervisord.conf"
        self.conf.write_text(
            CONF.format(root=root)
            + "".join(
                PROGRAM.format(name=n, command=c, startsecs=startsecs, root=root)
                for n, c in programs.items()
            )
        )
        self.rpc: Any = rpc_proxy(root / "bare.sock")
        self.system: Any = rpc_proxy(root / "bare.sock", "system")
        self.pid = 0
        self.pids: set[int] = set()

    def _track(self) -> list[dict[str, Any]]:
        infos = self.rpc.getAllProcessInfo()
        for info in infos:
            if info["pid"]:
                self.pids.add(info["pid"])
                self.reaper.add(info["pid"])
        return infos

    def all_in(self, state: str, names: list[str] | None = None) -> bool:
        """Every one of `names` (default: all) in `state`; a few names are asked for in
        one multicall of getProcessInfo, not with getAllProcessInfo of every program."""
        try:
            if names is None:
                infos = self._track()
            else:
                calls = [{"methodName": "supervisor.getProcessInfo", "params": [n]} for n in names]
                infos = self.system.multicall(calls)
        except (OSError, xmlrpc.client.Error):
            return False
        got = {i["name"]: i["statename"] for i in infos if isinstance(i, dict) and "name" in i}
        return all(got.get(n) == state for n in (names or self.names))

    def start(self, timeout: float = 300.0) -> Start:
        """Launch supervisord -> every program RUNNING (past startsecs): its phases and
        CPU. The end is read from supervisord's own log ("entered RUNNING state", to the
        ms), so the bench asks for every program's state only twice a second: asking
        more often would take CPU from the processes being started."""
        t0 = time.perf_counter()
        before = breakdown.children_before()
        epoch0 = time.time()
        timed_run([sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)])
        start = Start(epoch0)
        start.cpu["command"], start.counts["command"] = breakdown.children_before() - before, 1
        self.pid = int(wait_for(lambda: _read(self.root / "supervisord.pid"), 15, "bare pid"))
        self.reaper.add(self.pid)
        self.pids.add(self.pid)
        wait_for(self.all_in_running, timeout, f"{len(self.names)} bare programs RUNNING", 0.5)
        wall = time.perf_counter() - t0
        breakdown.log_phases(start, self.root / "supervisord.log")
        breakdown.tree_cpu(start, self.pid, lambda _cmdline: "sleeper")
        if start.last_running is None or start.last_running > wall:
            start.last_running = wall
        return start

    def all_in_running(self) -> bool:
        return self.all_in("RUNNING")

    def ctl(self, *args: str) -> None:
        timed_run(supervisorctl_cmd("-c", str(self.conf), *args), timeout=300, check=False)

    def stop_all_and_shutdown(self) -> float:
        """`supervisorctl stop all`, then `supervisorctl shutdown`, until supervisord is
        gone: seconds."""
        self._track()
        t0 = time.perf_counter()
        self.ctl("stop", "all")
        self.ctl("shutdown")
        wait_for(lambda: not alive(self.pid), 120, "bare supervisord to exit", 0.01)
        return time.perf_counter() - t0

    def close(self) -> None:
        """Shut down if still up; end by pid whatever it ran. Never raises: it runs in
        `finally` blocks, where an error would hide the one that is unwinding."""
        if self.pid and alive(self.pid):
            try:
                self.rpc = rpc_proxy(self.root / "bare.sock")  # a request may be half-sent
                self._track()
                self.rpc.shutdown()
            except Exception:  # noqa: BLE001 - the pid fallback below still runs
                pass
            deadline = time.monotonic() + 60
            while alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        self.reaper.end(sorted(self.pids))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def sleepers(count: int) -> dict[str, str]:
    return {f"p{i:03d}": SLEEPER_COMMAND for i in range(count)}
