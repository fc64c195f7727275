"""Figures 3 and 4: cold and no-change `up`, `status`, against bare supervisord."""

from __future__ import annotations

import sys
import time
import xmlrpc.client
from pathlib import Path

from .common import (
    SLEEPER,
    Reaper,
    Row,
    absolute_target,
    alive,
    median,
    pct,
    ratio_target,
    timed_run,
    wait_for,
)
from .fleet import BenchFleet, PollWatcher, rpc_proxy, wait_all_polled

BARE_CONF = """\
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

BARE_PROGRAM = """
[program:{name}]
command={command}
autostart=true
autorestart=unexpected
startsecs={startsecs}
stdout_logfile={root}/{name}.log
redirect_stderr=true
"""


def bare_supervisord(root: Path, count: int, reaper: Reaper, startsecs: int = 1) -> float:
    """supervisord launching `count` sleeping interpreters -> all RUNNING, seconds."""
    root.mkdir(parents=True, exist_ok=True)
    command = " ".join([SLEEPER[0], SLEEPER[1], f"'{SLEEPER[2]}'"])
    text = BARE_CONF.format(root=root) + "".join(
        BARE_PROGRAM.format(name=f"p{i:03d}", command=command, startsecs=startsecs, root=root)
        for i in range(count)
    )
    conf = root / "supervisord.conf"
    conf.write_text(text)
    rpc = rpc_proxy(root / "bare.sock")
    t0 = time.perf_counter()
    timed_run([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)], timeout=30)
    pid = int(wait_for(lambda: _read(root / "supervisord.pid"), 15, "bare supervisord pid"))
    pids = [pid]
    reaper.add(pid)
    try:

        def all_running() -> bool:
            try:
                infos = rpc.getAllProcessInfo()
            except (OSError, xmlrpc.client.Error):
                return False
            for info in infos:
                if info["pid"] and info["pid"] not in pids:
                    pids.append(info["pid"])
                    reaper.add(info["pid"])
            return len(infos) == count and all(i["statename"] == "RUNNING" for i in infos)

        wait_for(all_running, 300, f"{count} bare programs RUNNING", 0.05)
        return time.perf_counter() - t0
    finally:
        try:
            rpc.shutdown()
        except (OSError, xmlrpc.client.Error):
            pass
        deadline = time.monotonic() + 60
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        reaper.end(pids)  # anything of the bare run still alive


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def cold_up(fleet: BenchFleet, timeout: float = 600.0) -> tuple[float, float]:
    """`tf-fleet up` of a fresh fleet: (command wall, launch -> every agent polling), s."""
    with PollWatcher(fleet) as watcher:
        t0 = time.time()
        wall = fleet.up(timeout=timeout)
        polled = wait_all_polled(fleet, watcher, timeout)
    return wall, polled - t0


def cold_up_rows(
    count: int, wall: float, polled: float, bare: float, target_ratio: float | None
) -> list[Row]:
    rows = [
        Row(
            f"Bare supervisord: {count} sleeping interpreters → all RUNNING",
            bare,
            "s",
            note="baseline; startsecs 1",
        ),
        Row(
            f"Cold `tf-fleet up`, {count} agents, command wall (returns at RUNNING)",
            wall,
            "s",
            baseline=bare,
            baseline_text="bare supervisord",
            note="startsecs 1; includes supervisord and the embedded server",
        ),
        Row(
            f"Cold `tf-fleet up`, {count} agents → all polling",
            polled,
            "s",
            baseline=bare,
            baseline_text="bare supervisord",
            note="startsecs 1",
        ),
    ]
    if target_ratio is not None:
        ratio_target(rows[2], target_ratio)
    return rows


def no_change_up(fleet: BenchFleet, reps: int) -> Row:
    walls = [fleet.cli("up", timeout=120) for _ in range(reps)]
    row = Row(
        f"No-change `tf-fleet up`, {len(fleet.names)} agents (wall)",
        median(walls),
        "s",
        pct(walls, 95),
        note=f"median of {reps}",
    )
    return absolute_target(row, 0.5)


def status_rows(fleet: BenchFleet, reps: int) -> list[Row]:
    ctl = [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(fleet.conf), "status"]
    base = [timed_run(ctl, timeout=60, check=False)[0] for _ in range(reps)]
    baseline = median(base)
    count = len(fleet.names)
    rows = [
        Row(
            f"`supervisorctl status`, {count} agents (wall)",
            baseline,
            "s",
            pct(base, 95),
            note=f"baseline; median of {reps}",
        )
    ]
    for label, args in (("text", ()), ("--json", ("--json",))):
        walls = [fleet.cli_output("status", *args)[0] for _ in range(reps)]
        row = Row(
            f"`tf-fleet status` {label}, {count} agents (wall)",
            median(walls),
            "s",
            pct(walls, 95),
            baseline=baseline,
            baseline_text="supervisorctl status",
            note=f"median of {reps}",
        )
        rows.append(absolute_target(row, 0.5))
    return rows
