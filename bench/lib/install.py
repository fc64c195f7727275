"""The package as a user installs it: a wheel in a fresh venv, or a refusal.

An editable install puts its finder in a `.pth` file that every interpreter of its venv
runs at start-up (it imports pathlib, re and importlib.util): the baselines' sleepers and
`supervisorctl` paid it, a lab host's `pip install .` does not, and the ratios looked
better than a user's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

DIST = "tf-fleet"
REPO = Path(__file__).resolve().parents[2]
# What the wheel is built from (pyproject.toml's packages and package data), copied so
# the build leaves nothing in the tree and finds no stale build/ of an earlier one.
SOURCES = ("pyproject.toml", "README.rst", "multiagent", "templates")
# The bench's own client library, beside the package (no .pth file: no process the
# bench measures imports it or pays for it at start-up).
BENCH_NEEDS = ("requests",)


class InstallError(RuntimeError):
    """The bench cannot measure this install; the message says why and what to do."""


def installed_as_wheel() -> str | None:
    """None if this interpreter runs tf-fleet from a (non-editable) install, else why not."""
    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        return f"{DIST} is not installed in {sys.prefix}"
    direct = dist.read_text("direct_url.json")
    if direct:
        try:
            editable = json.loads(direct).get("dir_info", {}).get("editable", False)
        except ValueError:
            editable = False
        if editable:
            return f"{DIST} is an editable install in {sys.prefix} (`pip install -e`)"
    import multiagent

    where = Path(multiagent.__file__).resolve()
    if REPO in where.parents:
        return f"multiagent is imported from the source tree ({where.parent})"
    return None


def wheel_venv(root: Path, log: Callable[[str], None]) -> Path:
    """Build a wheel of this tree, install it (and its dependencies) into a fresh venv
    under `root`; the venv's interpreter."""
    src, dist, venv = root / "src", root / "dist", root / "venv"
    log("building a wheel of this tree and installing it into a fresh venv")
    src.mkdir(parents=True)
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)], root)
    wheels = sorted(dist.glob("tf_fleet-*.whl"))
    if not wheels:
        raise InstallError(f"pip wheel left no tf_fleet wheel in {dist}")
    # No pip of its own (ensurepip took ~4 s of CPU): this interpreter's pip installs into it.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    _run([*install, str(wheels[-1]), *BENCH_NEEDS], root)
    return python


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise InstallError(
            f"{' '.join(cmd)} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"
        )
