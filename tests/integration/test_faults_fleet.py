"""Faults on the fleet side: what tf-fleet does when it cannot know, when supervisord
died, when two commands race, and when state files are odd. Real supervisord, server and
agents; each test with a job in flight checks the job's end on the server and the
processes left on the host."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess

import psutil
from fixtures_fleet import wait_until

from multiagent.fleet.model.layout import Layout


def _test_status(env, job_id: str) -> int | None:
    return env.result(job_id).get("test_status")


def test_two_changing_commands_take_turns(fleet_env):
    fleet_env.start(fleet_env.agent_fleet(["lk1"]))
    lock = fleet_env.state_dir / "tf-fleet.lock"
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, b"pid 4242 (tf-fleet up)\n", 0)
        refused = fleet_env.run("up", "--no-lock-wait", check=False)
        assert refused.returncode == 1
        assert "pid 4242 (tf-fleet up) is changing this fleet" in refused.stderr
        assert "Traceback" not in refused.stderr
        waiting = subprocess.Popen(
            fleet_env.command("drain", "lk1"),
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert waiting.stderr is not None
        first = waiting.stderr.readline()  # said before it waits
        assert "waiting for pid 4242 (tf-fleet up) to finish" in first
        assert waiting.poll() is None
        assert not Layout(fleet_env.state_dir).drain_file("lk1").exists()  # it did nothing yet
    finally:
        os.close(fd)
    out, _ = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, out
    assert Layout(fleet_env.state_dir).drain_file("lk1").exists()


def test_an_agent_whose_status_file_cannot_be_written_counts_as_busy(fleet_env):
    pids = fleet_env.start(fleet_env.agent_fleet(["uk1"]))
    job = fleet_env.hold_running("shared")
    status_file = Layout(fleet_env.state_dir).status_file("uk1")

    def put_a_dir_in_its_place() -> bool:
        status_file.unlink(missing_ok=True)
        try:
            status_file.mkdir()
        except FileExistsError:  # the agent rewrote its file in between: again
            return False
        return True

    # every write of the agent now fails, and the file is unreadable
    wait_until(put_a_dir_in_its_place, what="a directory where uk1's status file was")
    try:
        restart = fleet_env.run("restart", "uk1", check=False)
        assert restart.returncode == 1
        assert "uk1 is busy: not known to be idle (status file unreadable" in restart.stderr
        down = fleet_env.run("down", check=False)
        assert down.returncode == 1
        assert "refusing to stop agents that run jobs" in down.stderr
        shown = fleet_env.run("status", check=False)
        assert "unknown" in shown.stdout and "counted as busy" in shown.stdout, shown.stdout
        assert [p.pid for p in fleet_env.agent_processes("uk1")] == [pids["uk1"]]
    finally:
        status_file.rmdir()
        fleet_env.release(job)
    fleet_env.same_process_until_done("uk1", pids["uk1"], job)
    fleet_env.assert_completed(job)


def test_up_after_supervisord_was_killed_mid_job_interrupts_nothing(fleet_env):
    names = ["sk1", "sk2"]
    pids = fleet_env.start(fleet_env.agent_fleet(names, {"sk1": ["q1"], "sk2": ["q2"]}))
    job = fleet_env.hold_running("q1")
    old = fleet_env.supervisord_pid()
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(old), 10, "supervisord to die")
    assert [p.pid for p in fleet_env.agent_processes("sk1")] == [pids["sk1"]]

    up = fleet_env.run_releasing(
        "up", jobs=[job], when="sk1: waiting for pid", check=False, timeout=90
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert "sk1: waiting for pid" in up.stderr, up.stderr
    new = fleet_env.supervisord_pid()
    assert new != old
    fleet_env.assert_completed(job)
    # The job ran to its end on the old process: its test phase exited 0, untouched.
    assert _test_status(fleet_env, job) == 0
    # Exactly one process per agent name, each a child of the new supervisord.
    for name in names:
        procs = fleet_env.agent_processes(name)
        assert len(procs) == 1, (name, procs)
        assert procs[0].ppid() == new
        assert procs[0].pid != pids[name]
    rows = fleet_env.status()
    assert {rows[n]["process"] for n in names} == {"RUNNING"}
    second = fleet_env.submit("q1", 0.1)
    fleet_env.assert_completed(second)


def test_down_after_supervisord_was_killed_leaves_no_process(fleet_env):
    fleet_env.start(fleet_env.agent_fleet(["sd1"]))
    everything = fleet_env.processes()
    os.kill(everything[0].pid, signal.SIGKILL)
    wait_until(lambda: not everything[0].is_running(), 10, "supervisord to die")
    down = fleet_env.run("down", "--safe", check=False, timeout=90)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "sd1" in down.stdout
    wait_until(lambda: not any(p.is_running() for p in everything), 15, "every process to end")
    assert fleet_env.agent_processes() == []


def test_an_agent_stopped_behind_our_back_is_shown_and_started_again(fleet_env):
    pids = fleet_env.start(fleet_env.agent_fleet(["st1"]))
    os.kill(pids["st1"], signal.SIGTERM)  # tf-agent exits 0: supervisord leaves it down
    wait_until(lambda: fleet_env.status()["st1"]["process"] == "EXITED", 20, "st1 to exit")
    shown = fleet_env.run("status", check=False)
    assert shown.returncode == 1
    assert "down: `tf-fleet up` starts it" in shown.stdout, shown.stdout
    assert fleet_env.status()["st1"]["down_unwanted"] is True
    fleet_env.run("up")
    wait_until(lambda: fleet_env.status()["st1"]["process"] == "RUNNING", 20, "st1 to run")


def test_odd_state_files_are_ignored_with_a_warning(fleet_env):
    fleet_env.start(fleet_env.agent_fleet(["od1"], polling_interval=30))
    applied = fleet_env.state_dir / "supervisor" / "applied.json"
    applied.write_text("[]")
    plan = fleet_env.run("plan", check=False)
    assert plan.returncode == 0, plan.stderr
    assert f"warning: ignoring {applied}" in plan.stderr
    assert "unchanged  od1" in plan.stdout
    status_file = Layout(fleet_env.state_dir).status_file("od1")
    good = json.loads(status_file.read_text())
    # Stopped, the agent cannot rewrite its status file (it does every 15 s) over the
    # ones the test plants, however long the commands take on a loaded host.
    os.kill(good["pid"], signal.SIGSTOP)
    try:
        for odd in ('{"pid": "12", "state": 3}', "[1, 2]", "{not json", ""):
            status_file.write_text(odd)
            shown = fleet_env.run("status", check=False)
            assert "counted as busy, status file" in shown.stdout, (odd, shown.stdout)
            refused = fleet_env.run("restart", "od1", check=False)
            assert refused.returncode == 1, (odd, refused.stdout)  # unknown is busy
            for proc in (shown, refused):
                assert "Traceback" not in proc.stdout + proc.stderr, odd
                assert "error: unexpected" not in proc.stderr, odd
    finally:
        os.kill(good["pid"], signal.SIGCONT)
    drained = fleet_env.run("drain", "od1", "--wait", "--timeout", "20s", check=False)
    assert "Traceback" not in drained.stdout + drained.stderr
    status_file.write_text(json.dumps(good))
