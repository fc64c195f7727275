"""A tf-fleet fleet in the bench's temp dir, driven through the real `tf-fleet` command."""

from __future__ import annotations

import json
import threading
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from multiagent.fleet.model.layout import Layout

from .common import Reaper, alive, free_port, read_json, tf_fleet_cmd, timed_run, wait_for

RESTART_FILE = "TESTFLINGER-DEVICE-RESTART-{name}"


def rpc_proxy(socket_path: Path, namespace: str = "supervisor") -> Any:
    """An XML-RPC namespace (supervisor.*, system.*) of the supervisord on socket_path."""
    transport = SupervisorTransport(None, None, f"unix://{socket_path}")
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
    return getattr(proxy, namespace)


class BenchFleet:
    def __init__(self, root: Path, label: str, reaper: Reaper):
        self.root = root / label
        self.root.mkdir(parents=True, exist_ok=True)
        self.file = self.root / "fleet.yaml"
        self.state = self.root / "s"  # short: supervisord's socket lives here
        self.layout = Layout(self.state)
        self.restart_dir = self.root / "r"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.reaper = reaper
        self.names: list[str] = []
        self.started = False
        self.seen_pids: set[int] = set()
        self._rpc: Any = None

    # -- files and commands --------------------------------------------------------
    def write(
        self,
        names: list[str],
        defaults: dict[str, Any] | None = None,
        agents: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """The fleet file (JSON is YAML)."""
        self.names = list(names)
        base = {"job_queues": ["bench"], "polling_interval": 10, "startsecs": 1}
        base.update(defaults or {})
        doc = {
            "server": {"embedded": True, "port": self.port},
            "state_dir": str(self.state),
            "restart": {"restart_dir": str(self.restart_dir), "timeout": "5m"},
            "defaults": base,
            "agents": {n: (agents or {}).get(n, {}) for n in names},
        }
        self.file.write_text(json.dumps(doc, indent=1))

    def cli(self, *args: str, timeout: float = 300.0, check: bool = True) -> float:
        """Run `tf-fleet -c FILE ARGS`; its wall time in seconds."""
        wall, _ = timed_run(tf_fleet_cmd("-c", str(self.file), *args), timeout=timeout, check=check)
        return wall

    def cli_output(self, *args: str, timeout: float = 120.0) -> tuple[float, str]:
        wall, proc = timed_run(
            tf_fleet_cmd("-c", str(self.file), *args), timeout=timeout, check=False
        )
        return wall, proc.stdout

    def up(self, timeout: float = 600.0) -> float:
        self.started = True  # even a failed `up` may have started supervisord
        wall = self.cli("up", timeout=timeout)
        self.remember_pids()
        return wall

    # -- supervisord ----------------------------------------------------------------
    @property
    def socket(self) -> Path:
        return self.layout.socket

    @property
    def conf(self) -> Path:
        return self.layout.supervisord_conf

    @property
    def rpc(self) -> Any:
        if self._rpc is None:
            self._rpc = rpc_proxy(self.socket)
        return self._rpc

    def processes(self) -> dict[str, dict[str, Any]]:
        infos = {i["name"]: i for i in self.rpc.getAllProcessInfo()}
        self.seen_pids |= {i["pid"] for i in infos.values() if i["pid"]}
        return infos

    def supervisord_pid(self) -> int:
        try:
            return int((self.state / "supervisor" / "supervisord.pid").read_text())
        except (OSError, ValueError):
            return 0

    def remember_pids(self) -> None:
        pid = self.supervisord_pid()
        if pid:
            self.seen_pids.add(pid)
        try:
            self.processes()
        except (OSError, xmlrpc.client.Error):
            pass

    def agent_pids(self) -> dict[str, int]:
        infos = self.processes()
        return {n: infos[n]["pid"] for n in self.names if n in infos and infos[n]["pid"]}

    # -- agents ---------------------------------------------------------------------
    def status(self, name: str) -> dict[str, Any] | None:
        return read_json(self.layout.status_file(name))

    def restart_file(self, name: str) -> Path:
        return self.restart_dir / RESTART_FILE.format(name=name)

    def ready(self, name: str) -> dict[str, Any] | None:
        """RUNNING (past startsecs) and polled by the process running now."""
        info = self.rpc.getProcessInfo(name)
        data = self.status(name)
        if (
            info["statename"] == "RUNNING"
            and data
            and data.get("pid") == info["pid"]
            and (data.get("last_poll") and data.get("state") == "waiting")
        ):
            self.seen_pids.add(info["pid"])
            return data
        return None

    def wait_ready(self, names: list[str] | None = None, timeout: float = 120.0) -> None:
        pending = list(names or self.names)

        def check() -> bool:
            infos = self.processes()
            for name in list(pending):
                info, data = infos.get(name), self.status(name)
                if (
                    info
                    and info["statename"] == "RUNNING"
                    and data
                    and (
                        data.get("pid") == info["pid"]
                        and data.get("last_poll")
                        and data.get("state") == "waiting"
                    )
                ):
                    pending.remove(name)
            return not pending

        wait_for(check, timeout, f"{len(pending)} agent(s) running and polling", 0.1)

    def first_poll_after(
        self, name: str, old_pid: int, since: float, timeout: float = 30.0
    ) -> float:
        """Epoch of the first poll by a process other than old_pid (status file only: no
        XML-RPC call, which would wake supervisord's loop and hide its latency)."""

        def polled() -> float | None:
            data = self.status(name)
            if data and data.get("pid") != old_pid and (data.get("last_poll") or 0) >= since:
                self.seen_pids.add(int(data["pid"]))
                return float(data["last_poll"])
            return None

        return wait_for(polled, timeout, f"{name}: first poll of the new process", 0.003)

    # -- the end --------------------------------------------------------------------
    def down(self) -> None:
        """`tf-fleet down --force`, then end by pid whatever we saw that is still alive."""
        if not self.started:
            return
        try:
            self.remember_pids()
            self.cli("down", "--force", timeout=120, check=False)
        except Exception:  # noqa: BLE001 - the pid fallback below still runs
            pass
        left = [p for p in self.seen_pids if alive(p)]
        if left:
            self.reaper.end(left)
        self.started = False


class PollWatcher:
    """Records, from a thread, the first last_poll each (agent, pid) writes: with 200
    agents `up` may outlast a polling interval, so reading once at the end is not enough."""

    def __init__(self, fleet: BenchFleet, period: float = 0.5):
        self.fleet = fleet
        self.period = period
        self.first: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PollWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.scan()
            self._stop.wait(self.period)

    def scan(self) -> None:
        for name in self.fleet.names:
            data = self.fleet.status(name)
            if data and data.get("last_poll") and data.get("pid"):
                self.first.setdefault((name, int(data["pid"])), float(data["last_poll"]))

    def all_polled(self, pids: dict[str, int]) -> float | None:
        """Epoch when the last of these (agent, pid) first polled; None if one has not."""
        times = [self.first.get((n, p)) for n, p in pids.items()]
        if not times or any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)


def wait_all_polled(fleet: BenchFleet, watcher: PollWatcher, timeout: float) -> float:
    """Epoch at which every agent of the fleet had polled from its current process."""

    def check() -> float | None:
        pids = fleet.agent_pids()
        if len(pids) < len(fleet.names):
            return None
        watcher.scan()
        return watcher.all_polled(pids)

    # Once a second: the time is the agents' own last_poll, so a slower look loses no
    # precision, and each look (every process's state over XML-RPC, every status file)
    # takes CPU from the agents being started.
    return wait_for(check, timeout, "every agent's first poll", 1.0)


def time_now() -> float:
    return time.time()
