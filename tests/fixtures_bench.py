"""The bench's scripts run as the suite's smoke tests: as a user runs them, bounded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_server import without_coverage

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def run_bench(script: str, *args: str, limit: float) -> subprocess.CompletedProcess[str]:
    """`bench/SCRIPT ARGS`; past `limit` seconds (a hang guard, never a speed target) it
    gets SIGTERM, so it ends every fleet it started before the test fails: a bench killed
    outright left them running and slowed the rest of the suite.

    The bench times the package's own processes: the suite's coverage, started in every
    Python subprocess that inherits its variables, would only slow them down here."""
    env = without_coverage()
    cmd = [sys.executable, str(BENCH_DIR / script), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"{script} still ran after {limit:.0f} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
