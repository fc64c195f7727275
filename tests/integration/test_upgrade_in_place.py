"""An upgrade in place is seen and rolled safely: tf-fleet run from a copy of this install,
whose agents run its `boot.py`; then the copy is upgraded (its version bumped), or a new
install replaces it and the old one's `boot.py` is gone, while a job runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fixtures_fleet import FleetEnv

import multiagent
from multiagent.fleet.model.templating import template_dir

NEW_VERSION = "0.2.0"


def _install(into: Path) -> Path:
    """A copy of this tf-fleet (sources and templates) under `into`, for PYTHONPATH."""
    package = Path(multiagent.__file__).resolve().parent
    shutil.copytree(package, into / "multiagent", ignore=shutil.ignore_patterns("__pycache__"))
    templates = template_dir()
    if templates.parent != package:  # a source checkout: templates/ beside the package
        shutil.copytree(templates, into / "templates")
    return into / "multiagent"


def _upgrade(package: Path) -> None:
    """What `pip install -U` does to the files: the same paths, a newer version."""
    init = package / "__init__.py"
    old = f'__version__ = "{multiagent.__version__}"'
    assert old in init.read_text()
    init.write_text(init.read_text().replace(old, f'__version__ = "{NEW_VERSION}"'))


@pytest.fixture
def from_copy(fleet_env, monkeypatch):
    """tf-fleet (and everything it starts) runs from a copy of this install; coverage is
    left out of those processes, whose files are not this checkout's."""
    for variable in ("COVERAGE_PROCESS_START", "COVERAGE_PROCESS_CONFIG"):
        monkeypatch.delenv(variable, raising=False)

    def use(root: Path) -> Path:
        package = _install(root)
        monkeypatch.setenv("PYTHONPATH", str(root))
        return package

    return use


def _busy(env: FleetEnv) -> tuple[dict[str, int], str]:
    pids = env.start(env.agent_fleet(["up-01", "up-02"], {"up-01": ["qa"], "up-02": ["qb"]}))
    return pids, env.hold_running("qa")


def _rolled(env: FleetEnv, pids: dict[str, int], job: str, expect: str) -> dict[str, int]:
    """`up` rolls both agents onto the installed code, the busy one after its job."""
    done = env.run_releasing("up", jobs=[job])
    assert expect in done.stdout, done.stdout
    env.assert_completed(job)
    after = env.wait_all_running()
    assert not set(after.values()) & set(pids.values()), (pids, after)
    for name, pid in after.items():
        assert [p.pid for p in env.agent_processes(name)] == [pid]
    return after


def test_an_upgrade_in_place_shows_and_up_restarts_each_agent_after_its_job(fleet_env, from_copy):
    package = from_copy(fleet_env.root / "install")
    pids, job = _busy(fleet_env)
    assert str(package / "agent" / "boot.py") in " ".join(
        fleet_env.agent_processes("up-01")[0].cmdline()
    )
    assert "code changed" not in fleet_env.run("status").stdout
    _upgrade(package)

    status = fleet_env.run("status")  # exit 0: they run, on the older code
    said = f"code changed since start: tf-fleet {multiagent.__version__} -> {NEW_VERSION}"
    for name in pids:
        assert f"--- {name}: {said}; `tf-fleet up`" in status.stdout, status.stdout
    assert f"restart    up-01  ({said})" in fleet_env.run("plan").stdout
    after = _rolled(fleet_env, pids, job, "2 restart")
    assert fleet_env.status_file("up-01")["version"] == NEW_VERSION
    assert "code changed" not in fleet_env.run("status").stdout
    assert fleet_env.run("up").stdout.strip() == "2 unchanged"  # the agents; the server apart
    assert fleet_env.pids() == after


def test_an_install_that_removed_the_running_boot_py_is_replaced_after_the_job(
    fleet_env, from_copy
):
    old = from_copy(fleet_env.root / "old")
    pids, job = _busy(fleet_env)
    new = from_copy(fleet_env.root / "new")  # a new install elsewhere, now the one run
    _upgrade(new)
    (old / "agent" / "boot.py").unlink()  # the old install's files are gone

    status = fleet_env.run("status", check=False)
    assert status.returncode == 1, status.stdout
    for name in pids:
        assert f"--- {name}: program entry stale: boot.py missing" in status.stdout
    refused = fleet_env.run("restart", "--safe", "--all", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "up-01: program entry stale: boot.py missing: a restart would not come back" in (
        refused.stderr
    )
    assert "nothing was restarted; `tf-fleet up`" in refused.stderr
    assert fleet_env.pids() == pids  # nothing restarted: the job runs on
    plan = fleet_env.run("plan").stdout
    assert "replace    up-01  (program entry changed; program entry stale: boot.py missing)" in plan
    _rolled(fleet_env, pids, job, "2 replace")
    command = " ".join(fleet_env.agent_processes("up-01")[0].cmdline())
    assert str(new / "agent" / "boot.py") in command
    assert fleet_env.run("status").returncode == 0
