"""A change waiting for an agent's job sits where no supervisord reads it: the host's own
`supervisorctl update` (Debian's, or the pip one on the private supervisord) while a job
runs applies nothing, stops nothing; the change is applied once the job has ended."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_fleet import FleetEnv
from test_system_mode import HostSupervisord

from multiagent.fleet.model.layout import Layout

DEBIAN_SUPERVISORCTL = "/usr/bin/supervisorctl"


def _busy_with_a_change(
    env: FleetEnv, names: list[str], mark: str, **supervisor: str
) -> tuple[dict, dict[str, int], str]:
    """Agents `names` (each on its own queue) run; the first runs a held job when the
    fleet file gives it a new environment. The fleet, the pids and the job."""
    fleet = env.agent_fleet(names, {n: [f"q-{n}"] for n in names})
    if supervisor:
        fleet["supervisor"] = supervisor
    pids = env.start(fleet)
    job = env.hold_running(f"q-{names[0]}")
    fleet["agents"][names[0]]["environment"] = {"LAB_MARK": mark}
    env.write(fleet)
    return fleet, pids, job


@pytest.fixture
def host(fleet_env) -> Iterator[HostSupervisord]:
    """The host's own supervisord (Debian's when installed), as in test_system_mode."""
    made = HostSupervisord(fleet_env.root / "host")
    try:
        made.start()
        yield made
    finally:
        made.stop()


def _update(command: list[str]) -> None:
    """`supervisorctl update`, as an operator or a charm action runs it."""
    done = subprocess.run([*command, "update"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _staged(env: FleetEnv, name: str) -> Path:
    return Layout(env.state_dir).pending_program(name)


def test_the_hosts_supervisorctl_update_leaves_a_pending_change_alone(
    fleet_env, host: HostSupervisord
):
    name, other = "pc-01", "pc-02"
    fleet, pids, job = _busy_with_a_change(
        fleet_env, [name, other], "blue", mode="system", config=str(host.conf)
    )
    live = host.include / f"{name}.conf"
    before = live.read_text()
    asked = fleet_env.run("up", "--no-wait")
    assert "asked" in asked.stdout, asked.stdout
    assert f"held down after its job until the next `tf-fleet up` swaps it: {name}" in (
        asked.stdout
    )
    # The change waits in the state dir; the host's include dir still has what runs.
    assert live.read_text() == before
    assert 'LAB_MARK="blue"' in _staged(fleet_env, name).read_text()
    assert _staged(fleet_env, name).stat().st_mode & 0o777 == 0o600
    assert f"replace    {name}  (program entry changed)" in fleet_env.run("plan").stdout
    pip_ctl = [sys.executable, "-m", "supervisor.supervisorctl"]
    ctl = [DEBIAN_SUPERVISORCTL] if os.path.exists(DEBIAN_SUPERVISORCTL) else pip_ctl
    _update([*ctl, "-c", str(host.conf)])
    fleet_env.release(job)
    fleet_env.same_process_until_done(name, pids[name], job)
    fleet_env.assert_completed(job)
    fleet_env.wait_for(
        lambda: host.states().get(name) == "EXITED", what="the held agent to exit once idle"
    )
    _update([*ctl, "-c", str(host.conf)])  # nothing new starts while the swap waits for `up`
    assert host.states()[name] == "EXITED" and not fleet_env.agent_processes(name)

    # Held down: `status` says so and exits 1 until `up` applies the change.
    status = fleet_env.run("status", check=False)
    assert status.returncode == 1, status.stdout
    assert f"--- {name}: down, held for a change not applied yet; `tf-fleet up`" in status.stdout
    assert "replace" in fleet_env.run("plan").stdout

    done = fleet_env.run("up")
    assert "1 replace, " in done.stdout, done.stdout
    assert 'LAB_MARK="blue"' in live.read_text() and not _staged(fleet_env, name).exists()
    new_pid = fleet_env.wait_all_running([name])[name]
    assert new_pid != pids[name]
    assert [p.pid for p in fleet_env.agent_processes(name)] == [new_pid]
    assert [p.pid for p in fleet_env.agent_processes(other)] == [pids[other]]
    assert fleet_env.run("status").returncode == 0
    after = fleet_env.hold_running(f"q-{name}")  # the new program takes jobs
    fleet_env.release(after)
    fleet_env.assert_completed(after)


def test_supervisorctl_update_while_up_waits_for_the_job_changes_nothing(fleet_env):
    name = "pw-01"
    _, pids, job = _busy_with_a_change(fleet_env, [name], "green")
    live = Layout(fleet_env.state_dir).private_program_dir / f"{name}.conf"
    before = live.read_text()
    seen: dict[str, str] = {}

    def waiting_then_update(output: str) -> bool:
        """Once `up` waits for the job: the live entry is still the old one, and the
        private supervisord's `supervisorctl update` changes nothing; then the release."""
        if "waiting for" not in output:
            return False
        seen["live"] = live.read_text()
        _update(fleet_env.ctl_command())
        seen["pids"] = str([p.pid for p in fleet_env.agent_processes(name)])
        return True

    done = fleet_env.run_releasing("up", jobs=[job], when=waiting_then_update)
    assert "1 replace" in done.stdout, done.stdout
    assert seen == {"live": before, "pids": str([pids[name]])}
    fleet_env.assert_completed(job)
    assert 'LAB_MARK="green"' in live.read_text() and not _staged(fleet_env, name).exists()
    new_pid = fleet_env.wait_all_running([name])[name]
    assert new_pid != pids[name]
    assert [p.pid for p in fleet_env.agent_processes(name)] == [new_pid]
    assert fleet_env.run("up").stdout.strip().endswith("unchanged")


def test_a_change_undone_while_pending_starts_the_held_agent_again(fleet_env):
    name = "pu-01"
    fleet, pids, job = _busy_with_a_change(fleet_env, [name], "red")
    live = Layout(fleet_env.state_dir).private_program_dir / f"{name}.conf"
    before = live.read_text()
    fleet_env.run("up", "--no-wait")
    assert _staged(fleet_env, name).exists()
    fleet_env.release(job)
    fleet_env.same_process_until_done(name, pids[name], job)
    fleet_env.assert_completed(job)
    fleet_env.wait_for(
        lambda: fleet_env.status()[name]["process"] == "EXITED",
        what="the held agent to exit once idle",
    )
    del fleet["agents"][name]["environment"]  # the change is undone before its swap
    fleet_env.write(fleet)
    plan = fleet_env.run("plan").stdout
    assert f"start      {name}  (held down (EXITED), no change pending)" in plan, plan
    assert "1 start" in fleet_env.run("up").stdout
    assert live.read_text() == before and not _staged(fleet_env, name).exists()
    new_pid = fleet_env.wait_all_running([name])[name]
    assert [p.pid for p in fleet_env.agent_processes(name)] == [new_pid] != [pids[name]]
    again = fleet_env.hold_running(f"q-{name}")  # it takes jobs again: no hold left
    fleet_env.release(again)
    fleet_env.assert_completed(again)
    assert fleet_env.run("status").returncode == 0
