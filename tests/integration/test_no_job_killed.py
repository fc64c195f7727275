"""Nothing kills a job by mistake: an agent whose status file cannot be written counts as
busy from the first second, and `--force`, which does kill, is immediate and says what it
killed. Real supervisord, server and agents, a job in flight in each test; each checks
the job's end on the server and the processes left on the host."""

from __future__ import annotations

import shutil
import subprocess

import psutil
import pytest

from multiagent.fleet.model.layout import Layout


def _chattr(flag: str, path) -> bool:
    chattr = shutil.which("chattr")
    if not chattr:
        return False
    return subprocess.run([chattr, flag, str(path)], capture_output=True).returncode == 0


def test_a_failed_status_write_makes_the_agent_busy_at_once(fleet_env):
    pids = fleet_env.start(fleet_env.agent_fleet(["fw1"]))
    status_file = Layout(fleet_env.state_dir).status_file("fw1")
    if not _chattr("+i", status_file):
        pytest.skip("chattr +i is not possible here (needs root and an ext4-like filesystem)")
    try:
        job = fleet_env.hold_running("shared")
        # The agent took the job, but its file still says it waits for one.
        said = fleet_env.status_file("fw1")
        assert said["pid"] == pids["fw1"] and said["state"] == "waiting" and not said["job_id"]
        restart = fleet_env.run("restart", "fw1", check=False)
        assert restart.returncode == 1, restart.stdout + restart.stderr
        assert (
            "fw1 is busy: not known to be idle (status file cannot be written now: it is"
            " immutable or append-only (chattr)" in restart.stderr
        )
        down = fleet_env.run("down", check=False)
        assert down.returncode == 1, down.stdout + down.stderr
        assert "refusing to stop agents that run jobs" in down.stderr
        assert "stopped" not in down.stdout
        assert [p.pid for p in fleet_env.agent_processes("fw1")] == [pids["fw1"]]
    finally:
        _chattr("-i", status_file)
    fleet_env.release(job)
    fleet_env.same_process_until_done("fw1", pids["fw1"], job)
    fleet_env.assert_completed(job)
    assert [p.pid for p in fleet_env.agent_processes("fw1")] == [pids["fw1"]]


def test_down_force_takes_over_from_a_pending_safe_restart_and_names_the_job(fleet_env):
    pids = fleet_env.start(fleet_env.agent_fleet(["ff1"]))
    job = fleet_env.hold_running("shared")  # never ends by itself: only the stop ends it
    pending = fleet_env.started("restart", "--safe", "ff1", "--timeout", "6h")
    try:
        fleet_env.wait_for(
            lambda: fleet_env.status_file("ff1").get("restart_pending"),
            what="the safe restart to be asked and pending",
        )
        down = fleet_env.run("down", "--force", timeout=60)
        out, err = pending.communicate(timeout=30)
    finally:
        if pending.poll() is None:
            pending.kill()
    assert f"interrupted ff1: waiting for job {job} in phase test" in down.stdout
    assert f"job {job} is cancelled on the server" in down.stdout
    assert "stopped 2 programs" in down.stdout and "supervisord stopped" in down.stdout
    assert "(tf-fleet restart --safe) to stop waiting" in down.stderr
    assert pending.returncode == 1, out + err
    assert "(tf-fleet down --force) took over; this command stopped waiting" in err
    assert "was waiting for ff1: waiting for job" in err
    assert "Traceback" not in err + down.stderr
    assert fleet_env.agent_processes() == [] and not psutil.pid_exists(pids["ff1"])
    assert fleet_env.processes() == []
    fleet_env.run("up")  # the embedded server again: its database kept the job's end
    result = fleet_env.result(job)
    assert result["job_state"] == "cancelled", result
    assert result.get("test_status") == 247, result  # the phase it killed, as upstream says
    # Then cleanup ran, as under upstream's agent, within supervisord's stopwaitsecs.
    assert result.get("cleanup_status") == 0, result


def test_down_force_ends_on_the_server_a_job_its_agent_could_not_end(fleet_env):
    # An upstream-like agent dies on SIGTERM without a word to its server: the job's
    # end is tf-fleet's to post.
    pids = fleet_env.start(fleet_env.upstream_fleet(["uf1"], {"uf1": ["q-uf1"]}))
    job = fleet_env.submit("q-uf1", 0, "sleep 307")
    fleet_env.wait_running(job)
    down = fleet_env.run("down", "--force", timeout=60)
    assert f"interrupted uf1: waiting for its job to end (1 child process(es)); job {job}" in (
        down.stdout
    )
    assert f"job {job} is cancelled on the server" in down.stdout
    assert fleet_env.agent_processes() == [] and not psutil.pid_exists(pids["uf1"])
    assert fleet_env.processes() == []
    fleet_env.run("up")  # the embedded server again: its database kept the job's end
    assert fleet_env.job_state(job) == "cancelled"


def test_restart_force_takes_over_from_a_pending_safe_restart(fleet_env):
    pids = fleet_env.start(fleet_env.agent_fleet(["fr1"]))
    job = fleet_env.hold_running("shared")
    pending = fleet_env.started("restart", "--safe", "fr1")
    try:
        fleet_env.wait_for(
            lambda: fleet_env.status_file("fr1").get("restart_pending"),
            what="the safe restart to be asked and pending",
        )
        forced = fleet_env.run("restart", "--force", "fr1", timeout=60)
        out, err = pending.communicate(timeout=30)
    finally:
        if pending.poll() is None:
            pending.kill()
    assert f"interrupted fr1: waiting for job {job} in phase test" in forced.stdout
    assert f"job {job} is cancelled on the server" in forced.stdout
    assert pending.returncode == 1, out + err
    assert "(tf-fleet restart --force) took over; this command stopped waiting" in err
    result = fleet_env.result(job)
    assert result["job_state"] == "cancelled" and result.get("test_status") == 247, result
    left = [p.pid for p in fleet_env.agent_processes("fr1")]
    assert len(left) == 1 and left[0] != pids["fr1"], left
    after = fleet_env.submit("shared", 0)  # the new process takes jobs
    fleet_env.assert_completed(after)
