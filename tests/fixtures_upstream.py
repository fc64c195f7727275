"""Upstream Testflinger's device connectors, agent and CLI, installed from
../shared/upstream-testflinger into one venv per test session (shared by the xdist
workers, built by the first one that needs it), for tests that run the real thing."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from fixtures_server import without_coverage

UPSTREAM = Path(__file__).resolve().parents[2] / "shared" / "upstream-testflinger"
PACKAGES = ("common", "device-connectors", "agent", "cli")


@pytest.fixture(scope="session")
def upstream_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ of a venv with `testflinger-device-connector`, `testflinger-agent` and
    `testflinger-cli` (one install for the session: each venv costs tens of seconds)."""
    if not all((UPSTREAM / p / "pyproject.toml").is_file() for p in PACKAGES):
        pytest.skip(f"upstream Testflinger is not beside this clone ({UPSTREAM} is absent)")
    # Under xdist the parent of a worker's basetemp is the session's: one venv for all
    # workers; without xdist, the basetemp is the session's.
    base = tmp_path_factory.getbasetemp()
    session = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    home = session / "upstream-testflinger-venv"
    home.mkdir(exist_ok=True)
    done = home / "installed"
    with open(home / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            venv.create(home / "venv")  # without pip: this one installs into it (faster)
            target = str(home / "venv" / "bin" / "python")
            # pip compiles the .pyc files: with PYTHONDONTWRITEBYTECODE set (as on some CI
            # hosts), every upstream process would otherwise compile all it imports
            pip = [sys.executable, "-m", "pip", "--python", target, "install", "-q"]
            # Upstream versions itself from git tags, which a copy of its source lacks. pip
            # and its builds are not the package's code: the suite's coverage stays out.
            env = dict(without_coverage(), SETUPTOOLS_SCM_PRETEND_VERSION="1.0.0")
            paths = [str(UPSTREAM / p) for p in PACKAGES]
            installed = subprocess.run(
                [*pip, *paths], capture_output=True, text=True, env=env, timeout=600
            )
            if installed.returncode != 0:
                pytest.fail(f"pip install of upstream Testflinger failed:\n{installed.stderr}")
            done.write_text("ok\n")
    return home / "venv" / "bin"
