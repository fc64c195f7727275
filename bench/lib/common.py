"""Shared plumbing: ports, timing, statistics, result rows and the processes we started."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")
BIN = Path(sys.executable).parent
TF_FLEET = str(BIN / "tf-fleet") if (BIN / "tf-fleet").exists() else None
# A bare interpreter that only sleeps: the baseline process. Without site (-S), as
# tf-agent's program starts it (`python -S .../agent/boot.py`).
SLEEPER = [sys.executable, "-S", "-c", "import time; time.sleep(1e9)"]


def supervisorctl_cmd(*args: str) -> list[str]:
    """The venv's `supervisorctl` console script: started as `tf-fleet` is."""
    script = BIN / "supervisorctl"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "supervisor.supervisorctl"]
    return [*head, *args]


def tf_fleet_cmd(*args: str) -> list[str]:
    """The installed `tf-fleet` entry point (what a user runs), else `python -m multiagent`."""
    head = [TF_FLEET] if TF_FLEET else [sys.executable, "-m", "multiagent"]
    return [*head, *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(cond: Callable[[], T | None], timeout: float, what: str, interval: float = 0.005) -> T:
    """The first truthy value of `cond()`, looked at every `interval` s until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def timed_run(
    cmd: list[str], timeout: float = 120.0, check: bool = True, **kwargs: Any
) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command; wall seconds and the completed process."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    wall = time.perf_counter() - t0
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}:"
            f" {(proc.stderr or proc.stdout).strip()[-800:]}"
        )
    return wall, proc


def median(values: list[float]) -> float:
    return statistics.median(values)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


@dataclass
class Row:
    """One line of the results table. A figure is judged on its p95 where it has at
    least 20 samples (or where its target says p95), else on its median; its baseline
    is the same statistic of the baseline's samples, measured in the same run."""

    figure: str
    value: float | None  # the median (or the single measurement)
    unit: str  # "s", "ms", "MiB", "%", "jobs/s"
    p95: float | None = None
    baseline: float | None = None  # the baseline's judged statistic
    baseline_text: str = ""  # what the baseline is
    target: str = ""  # in words, e.g. "≤ 1.5× baseline (p95)"
    met: bool | None = None
    note: str = ""
    n: int = 1  # samples of the figure
    baseline_n: int = 0  # samples of the baseline
    judged: str = "median"  # "median" or "p95": the statistic targets and ratios use

    @property
    def stat(self) -> float | None:
        judged_on_tail = self.judged in ("p95", "p99") and self.p95 is not None
        return self.p95 if judged_on_tail else self.value

    @property
    def ratio(self) -> float | None:
        if self.stat is None or not self.baseline:
            return None
        return self.stat / self.baseline


def judged_on(count: int, force_p95: bool = False) -> str:
    return "p95" if force_p95 or count >= P95_MIN_SAMPLES else "median"


P95_MIN_SAMPLES = 20


def stat_of(values: list[float], judged: str) -> float:
    return pct(values, 95) if judged == "p95" else median(values)


def sampled(
    figure: str,
    values: list[float],
    unit: str,
    base: list[float] | None = None,
    base_text: str = "",
    note: str = "",
    force_p95: bool = False,
) -> Row:
    """A row from samples (and a baseline's samples): median, p95, counts, and the
    statistic it is judged on (the baseline is judged on the same one)."""
    judged = judged_on(len(values), force_p95)
    row = Row(
        figure,
        median(values),
        unit,
        pct(values, 95) if len(values) > 1 else None,
        note=note,
        n=len(values),
        judged=judged,
    )
    if base:
        row.baseline = stat_of(base, judged)
        row.baseline_text = base_text
        row.baseline_n = len(base)
    return row


def ratio_target(row: Row, limit: float) -> Row:
    row.target = f"≤ {limit:g}× baseline ({row.judged})"
    row.met = row.ratio is not None and row.ratio <= limit
    return row


def absolute_target(row: Row, limit: float, text: str | None = None) -> Row:
    row.target = text or f"≤ {limit:g} {row.unit} ({row.judged})"
    row.met = row.stat is not None and row.stat <= limit
    return row


def minimum_target(row: Row, limit: float, text: str | None = None) -> Row:
    row.target = text or f"≥ {limit:g} {row.unit}"
    row.met = row.stat is not None and row.stat >= limit
    return row


class Reaper:
    """Every process this run started, ended by pid (SIGTERM, then SIGKILL) at the end."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def add(self, pid: int) -> None:
        if pid and pid not in self.pids:
            self.pids.append(pid)

    def popen(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(cmd, **kwargs)
        self.add(proc.pid)
        return proc

    def end(self, pids: list[int] | None = None, grace: float = 10.0) -> None:
        targets = [p for p in (self.pids if pids is None else pids) if _alive(p)]
        for pid in targets:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(_alive(p) for p in targets) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in targets:
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
        for pid in targets:
            _reap(pid)
        if pids is None:
            self.pids.clear()
        else:
            self.pids = [p for p in self.pids if p not in pids]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def alive(pid: int) -> bool:
    return _alive(pid)
