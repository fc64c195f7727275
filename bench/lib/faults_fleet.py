"""The fault soak's fleet: five tf-agents and the embedded server in a private temp dir,
driven through the real `tf-fleet` command; its run dir on a small tmpfs that a fault
fills; the server's own database read (read-only) for what happened to each job."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from multiagent.fleet.model.layout import Layout

from .common import free_port, read_json, tf_fleet_cmd
from .fleet import rpc_proxy

QUEUE = "soak"
TAG_VAR = "TFB_SOAK"  # in every agent's environment: its phase processes inherit it
SERVER_PROGRAM = "tf-fleet-server"
RUN_DIR_SIZE = "256k"
FILL_FILE = ".tfb-fill"


@dataclass
class Cmd:
    """One `tf-fleet` command the soak ran."""

    args: list[str]
    rc: int
    wall: float
    tail: str

    def short(self) -> str:
        return f"`tf-fleet {' '.join(self.args)}` → exit {self.rc} in {self.wall:.1f} s"


class SoakFleet:
    def __init__(self, root: Path, agents: int = 5):
        self.root = root
        self.file = root / "fleet.yaml"
        self.state = root / "s"  # short: supervisord's socket lives here
        self.run_dir = self.state / "run"
        self.ledger = root / "ledger.txt"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.names = [f"fa-{i:02d}" for i in range(1, agents + 1)]
        self.polling_interval = 0.5
        self.env_gen: dict[str, int] = {}
        self.mounted = False
        self.filled = False
        self.session = requests.Session()

    # -- the fleet file --------------------------------------------------------------
    def write(self) -> None:
        connector = "tf-local-connector {phase} -c {{agent_dir}}/default.yaml testflinger.json"
        defaults = {
            "job_queues": [QUEUE],
            "polling_interval": self.polling_interval,
            "startsecs": 1,
            "stopwaitsecs": 20,
            "setup_command": connector.format(phase="setup"),
            "test_command": connector.format(phase="test"),
            "cleanup_command": connector.format(phase="cleanup"),
            "device": {"device_ip": "127.0.0.1"},
            "environment": {TAG_VAR: str(self.root)},
        }
        agents: dict[str, Any] = {}
        for name in self.names:
            gen = self.env_gen.get(name)
            agents[name] = {"environment": {"TFB_GEN": str(gen)}} if gen else {}
        doc = {
            "server": {"embedded": True, "host": "127.0.0.1", "port": self.port},
            "state_dir": str(self.state),
            "restart": {"restart_dir": str(self.root / "r"), "timeout": "3m"},
            "defaults": defaults,
            "agents": agents,
        }
        self.file.write_text(json.dumps(doc, indent=1))

    @property
    def agents_prefix(self) -> str:
        return str(self.state / "agents") + "/"

    def cli(self, *args: str, timeout: float = 240.0) -> Cmd:
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                tf_fleet_cmd("-c", str(self.file), *args),
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.root,
            )
            rc, out = proc.returncode, (proc.stdout + proc.stderr)
        except subprocess.TimeoutExpired as exc:
            told = "".join(_text(part) for part in (exc.stdout, exc.stderr))
            rc, out = -1, f"timed out after {timeout:.0f} s: {told}"
        tail = " / ".join(line.strip() for line in str(out).strip().splitlines()[-4:])
        return Cmd(list(args), rc, time.monotonic() - t0, tail[-600:])

    # -- supervisord and processes -----------------------------------------------------
    def supervisord_pid(self) -> int:
        try:
            return int((self.state / "supervisor" / "supervisord.pid").read_text())
        except (OSError, ValueError):
            return 0

    def programs(self) -> dict[str, dict[str, Any]]:
        """supervisord's view, {} when it does not answer."""
        try:
            infos = rpc_proxy(self.state / "supervisor.sock").getAllProcessInfo()
        except (OSError, xmlrpc.client.Error):
            return {}
        return {i["name"]: i for i in infos}

    def pid_of(self, name: str) -> int:
        info = self.programs().get(name)
        return int(info["pid"]) if info and info.get("pid") else 0

    def status(self, name: str) -> dict[str, Any] | None:
        return read_json(Layout(self.state).status_file(name))  # wherever the product keeps it

    def ready(self) -> bool:
        """Every agent RUNNING under supervisord and polled from its current process."""
        infos = self.programs()
        for name in self.names:
            info, data = infos.get(name), self.status(name)
            if not info or info["statename"] != "RUNNING" or not data:
                return False
            if data.get("pid") != info["pid"] or not data.get("last_poll"):
                return False
        return SERVER_PROGRAM in infos and infos[SERVER_PROGRAM]["statename"] == "RUNNING"

    def record(self, name: str) -> dict[str, Any] | None:
        """The agent's job record: the job its process is running, if any."""
        return read_json(self.state / "agents" / name / "run" / f".tf-agent-job-{name}.json")

    # -- the run dir on a tmpfs ------------------------------------------------------
    def mount_run_dir(self) -> str | None:
        """A small tmpfs on run/; the reason when it cannot be mounted."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [
                "mount",
                "-t",
                "tmpfs",
                "-o",
                f"size={RUN_DIR_SIZE},mode=0755",
                "tfb-run",
                str(self.run_dir),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            return (proc.stderr or proc.stdout).strip() or f"mount exited {proc.returncode}"
        self.mounted = True
        return None

    def fill_run_dir(self) -> str:
        """Fill run/ with dd until ENOSPC; what dd said."""
        proc = subprocess.run(
            ["dd", "if=/dev/zero", f"of={self.run_dir / FILL_FILE}", "bs=4k"],
            capture_output=True,
            text=True,
        )
        self.filled = True
        return (proc.stderr.strip().splitlines() or [""])[0]

    def free_run_dir(self) -> None:
        (self.run_dir / FILL_FILE).unlink(missing_ok=True)
        self.filled = False

    def unmount(self) -> None:
        if not self.mounted:
            return
        proc = subprocess.run(["umount", str(self.run_dir)], capture_output=True)
        if proc.returncode != 0:
            subprocess.run(["umount", "-l", str(self.run_dir)], capture_output=True)
        self.mounted = False

    # -- the server ------------------------------------------------------------------
    def submit(self, body: dict[str, Any], timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                resp = self.session.post(f"{self.url}/v1/job", json=body, timeout=10)
                resp.raise_for_status()
                return str(resp.json()["job_id"])
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def db(self) -> sqlite3.Connection:
        path = self.state / "server" / "testflinger.db"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        return conn

    def jobs(self) -> dict[str, dict[str, Any]]:
        """{job_id: {state, agent, result}} straight from the server's database."""
        with self.db() as conn:
            rows = conn.execute("SELECT job_id, state, agent, result_data FROM jobs").fetchall()
        return {
            r["job_id"]: {
                "state": r["state"],
                "agent": r["agent"],
                "result": json.loads(r["result_data"] or "{}"),
            }
            for r in rows
        }

    def output_logs(self) -> dict[str, str]:
        """{job_id: every output fragment, in order}."""
        out: dict[str, list[str]] = {}
        with self.db() as conn:
            rows = conn.execute(
                "SELECT job_id, log_data FROM logs WHERE log_type = 'output' ORDER BY id"
            ).fetchall()
        for row in rows:
            out.setdefault(row["job_id"], []).append(row["log_data"])
        return {k: "".join(v) for k, v in out.items()}


def _text(output: bytes | str | None) -> str:
    """What a timed-out command printed: bytes there, whatever `text=True` asked for."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""
