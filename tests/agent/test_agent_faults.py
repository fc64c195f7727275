"""tf-agent when things die or fill up: real agent processes against the real local server.

Each test asserts what a user would see: the job's final state and phase statuses on the
server, and the processes left on the host.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from fixtures_agent import AgentProc, job, pid_alive, read_pid, wait_for

from multiagent.vocabulary import AgentExit, PhaseStatus, status_file_name

CONNECTOR = f"{sys.executable} -m multiagent.connectors.local"


def agent_data(server, name: str) -> dict:
    return requests.get(f"{server.url}/v1/agents/data/{name}", timeout=5).json()


# -- a dead job is closed, truthfully ---------------------------------------------------
def test_agent_killed_mid_job_closes_the_job_before_polling(shared_server, make_agent, tmp_path):
    pidfile = tmp_path / "sleep.pid"
    agent = make_agent(
        shared_server.url, test_command=f"{CONNECTOR} test", cleanup_command="echo cleanup-ran"
    ).start()
    cmds = f"echo phase-started; sleep 4242 & echo $! > {pidfile}; wait"
    first = shared_server.submit(job(agent, cmds))
    sleeper = read_pid(pidfile)
    wait_for(lambda: "phase-started" in shared_server.output(first), 10, what="output sent")
    rundir = agent.base / "exec" / first
    assert (rundir / "testflinger.json").exists()
    agent.signal(signal.SIGKILL)
    agent.wait_exit(5)
    assert pid_alive(sleeper) and shared_server.job_state(first) == "test"
    second = shared_server.submit(job(agent, "echo second"))

    agent.start(wait_polling=False)
    shared_server.wait_job_state(first, {"complete"}, timeout=15)
    res = shared_server.result(first)
    assert res["test_status"] == PhaseStatus.AGENT_ERROR
    assert "died during the test phase" in res["test_output"]
    assert "sleep 4242" in res["test_output"]
    assert res["test_output"].count("phase-started\n") == 1  # output sent once, not twice
    assert "cleanup_status" not in res  # the dead job's cleanup is not run later
    assert not pid_alive(sleeper)
    # testflinger.json and its secrets with it (removed just after the close is posted)
    wait_for(lambda: not rundir.exists(), 10, what="the dead job's files removed")
    # Only then a new job: the log says the dead job was closed before the second began.
    shared_server.wait_job_state(second, {"complete"}, timeout=15)
    agent.wait_status(lambda s: s["state"] == "waiting" and s["job_id"] is None, what="idle")
    assert not list((agent.base / "exec").iterdir())  # no job dir, no job record
    log = agent.log_text
    assert log.index(f"job {first} of the dead agent closed") < log.index(f"starting job {second}")
    assert shared_server.result(second)["test_status"] == 0


def test_dead_job_waits_for_the_server_and_takes_no_job_meanwhile(tf_server, make_agent, tmp_path):
    pidfile = tmp_path / "sleep.pid"
    agent = make_agent(tf_server.url, test_command=f"{CONNECTOR} test").start()
    first = tf_server.submit(job(agent, f"sleep 4242 & echo $! > {pidfile}; echo in-test; wait"))
    sleeper = read_pid(pidfile)
    agent.wait_status(lambda s: s["state"] == "test", what="test phase")
    agent.signal(signal.SIGKILL)
    agent.wait_exit(5)
    second = tf_server.submit(job(agent, "echo second"))
    tf_server.stop()

    agent.start(wait_polling=False)
    # Its processes end at once, server or not; the record stays until the server knows.
    wait_for(lambda: not pid_alive(sleeper), 10, what="the dead job's sleep ended")
    record = agent.base / "exec" / f".tf-agent-job-{agent.name}.json"
    wait_for(lambda: "server unreachable" in agent.log_text, 10, what="a failed attempt")
    assert record.exists() and agent.proc.poll() is None
    tf_server.start()
    tf_server.wait_job_state(first, {"complete"}, timeout=40)
    assert tf_server.result(first)["test_status"] == PhaseStatus.AGENT_ERROR
    tf_server.wait_job_state(second, {"complete"}, timeout=15)
    # The second job's own record goes just after its final result reaches the server.
    wait_for(lambda: not record.exists(), 10, what="the job record removed")
    log = agent.log_text
    assert log.index(f"job {first} of the dead agent closed") < log.index(f"starting job {second}")


def test_sigterm_mid_job_is_recorded_and_not_closed_again(shared_server, make_agent, tmp_path):
    """A plain SIGTERM keeps its behaviour: the job ends cancelled (247), the agent exits 0,
    and its next start finds nothing to close."""
    pidfile = tmp_path / "sleep.pid"
    agent = make_agent(shared_server.url, test_command=f"sleep 4242 & echo $! > {pidfile}; wait")
    agent.start()
    job_id = shared_server.submit(job(agent, "x"))
    sleeper = read_pid(pidfile)
    agent.signal(signal.SIGTERM)
    assert agent.wait_exit(5) == 0
    assert not pid_alive(sleeper)
    res = shared_server.result(job_id)
    assert res["job_state"] == "cancelled" and res["test_status"] == 247
    agent.start()
    assert "closing it before polling" not in agent.log_text
    assert shared_server.result(job_id)["test_status"] == 247


# -- one process per agent name -----------------------------------------------------------
def test_second_agent_with_another_run_dir_exits_3_before_the_server(shared_server, make_agent):
    agent = make_agent(shared_server.url, polling_interval=0.5, test_command="echo ran").start()
    before = agent_data(shared_server, agent.name)
    other_run = agent.base / "other-run"
    cmd = agent.command()
    cmd[cmd.index("--run-dir") + 1] = str(other_run)
    start = time.monotonic()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    assert second.returncode == AgentExit.NAME_TAKEN
    assert second.stderr.count("\n") == 1 and f"pid {agent.proc.pid}" in second.stderr
    assert time.monotonic() - start < 5
    assert not (other_run / status_file_name(agent.name)).exists()  # wrote nothing either
    assert agent_data(shared_server, agent.name) == before  # the server never heard of it
    # The real agent goes on: it takes a job.
    job_id = shared_server.submit(job(agent, "x"))
    shared_server.wait_job_state(job_id, {"complete"}, timeout=10)
    assert agent.proc.poll() is None


def test_a_config_copy_is_the_same_agent(shared_server, make_agent, tmp_path):
    """Another config file (other dirs, other run dir), same name and server: refused."""
    agent = make_agent(shared_server.url, polling_interval=0.5).start()
    copy = dict(agent.config, execution_basedir=str(tmp_path / "x2"))
    conf = tmp_path / "copy.conf"
    conf.write_text(yaml.safe_dump(copy))
    cmd = [sys.executable, "-m", "multiagent.agent", "-c", str(conf)]
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=tmp_path)
    assert second.returncode == AgentExit.NAME_TAKEN, second.stderr
    assert f"pid {agent.proc.pid}" in second.stderr
    assert not (tmp_path / status_file_name(agent.name)).exists()


# -- every internal error is a failed job -----------------------------------------------
def test_bad_attachments_fail_the_job_and_submit_wait_says_so(shared_server, make_agent, tmp_path):
    agent = make_agent(shared_server.url, test_command="cat attachments/test/a").start()
    (tmp_path / "file-a").write_text("a\n")
    (tmp_path / "file-b").write_text("b\n")
    spec = {
        "job_queue": agent.queue,
        "test_data": {
            "test_cmds": "x",
            "attachments": [
                {"local": str(tmp_path / "file-a"), "agent": "a"},
                {"local": str(tmp_path / "file-b"), "agent": "a/b"},  # under a file
            ],
        },
    }
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(spec))
    submit = subprocess.run(
        [sys.executable, "-m", "multiagent", "submit", str(job_file), "--server"]
        + [shared_server.url, "--wait", "--poll-interval", "0.2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submit.returncode != 0, submit.stdout + submit.stderr
    job_id = wait_for(lambda: _last_job(agent), 5, what="job in the agent's log")
    res = shared_server.result(job_id)
    assert res["job_state"] == "complete"
    assert res["setup_status"] == PhaseStatus.AGENT_ERROR and "test_status" not in res
    assert "attachments rejected: attachment 'test/a/b'" in res["setup_output"]
    # The agent goes on polling: the next job runs.
    again = shared_server.submit(job(agent, "x"))
    shared_server.wait_job_state(again, {"complete"}, timeout=10)
    assert agent.proc.poll() is None


def test_internal_error_fails_the_phase_it_happened_in(shared_server, make_agent):
    """The agent's own bookkeeping fails (its outcome file cannot be written) after setup
    and in cleanup: each phase fails with the error in its output, the job completes
    without test, nothing of the job stays on disk, and the agent goes on."""
    agent = make_agent(
        shared_server.url,
        setup_command="mkdir testflinger-outcome.json.tmp; echo setup-ran",
        test_command="echo test-ran",
        cleanup_command="echo cleanup-ran",
    ).start()
    job_id = shared_server.submit(job(agent, "x"))
    shared_server.wait_job_state(job_id, {"complete"}, timeout=10)
    res = shared_server.result(job_id)
    assert res["setup_status"] == PhaseStatus.AGENT_ERROR and "test_status" not in res
    assert "internal error in the setup phase: IsADirectoryError" in res["setup_output"]
    assert res["cleanup_status"] == PhaseStatus.AGENT_ERROR
    assert "internal error in the cleanup phase" in res["cleanup_output"]
    agent.wait_status(lambda s: s["state"] == "waiting" and s["job_id"] is None, what="idle")
    assert not list((agent.base / "exec").iterdir())
    again = shared_server.submit(job(agent, "x"))
    shared_server.wait_job_state(again, {"complete"}, timeout=10)
    assert agent.proc.poll() is None


def _last_job(agent: AgentProc) -> str | None:
    lines = [line for line in agent.log_text.splitlines() if "starting job " in line]
    return lines[-1].rsplit(" ", 1)[1] if lines else None


# -- a phase leaves nothing behind ------------------------------------------------------
def test_background_children_of_a_phase_are_ended(shared_server, make_agent, tmp_path):
    pidfile, stubborn = tmp_path / "bg.pid", tmp_path / "stubborn.pid"
    agent = make_agent(
        shared_server.url,
        # The phase ends once its background child runs `sleep` (not still a forked shell
        # before its exec), so the leftover is named by its own command line.
        setup_command=(
            f"sleep 4242 & echo $! > {pidfile}; "
            'until [ "$(cat /proc/$!/comm)" = sleep ]; do :; done; echo setup-done'
        ),
        test_command=(
            f"sh -c 'trap \"\" TERM; echo $$ > {stubborn}; sleep 4343 & wait' & "
            f"while [ ! -s {stubborn} ]; do sleep 0.05; done; echo test-done"
        ),
    ).start()
    job_id = shared_server.submit(job(agent, "x"))
    shared_server.wait_job_state(job_id, {"complete"}, timeout=20)
    bg, hard = read_pid(pidfile), read_pid(stubborn)
    res = shared_server.result(job_id)
    assert res["setup_status"] == 0 and res["test_status"] == 0
    assert "killed 1 leftover process(es): sleep 4242" in res["setup_output"]
    assert "killed 2 leftover process(es)" in res["test_output"]  # SIGKILL after the grace
    assert "sleep 4343" in res["test_output"]
    assert not pid_alive(bg) and not pid_alive(hard)


def _in_own_session(pid_var: str = "$!") -> str:
    """Shell: wait until `pid_var` runs `sleep` in a session of its own (setsid done)."""
    return (
        f'until [ "$(cat /proc/{pid_var}/comm)" = sleep ] && '
        f'[ "$(cut -d" " -f6 /proc/{pid_var}/stat)" != "$(cut -d" " -f6 /proc/$$/stat)" ]; '
        "do :; done"
    )


def test_a_phase_child_that_left_its_group_is_ended_and_named(shared_server, make_agent, tmp_path):
    """`setsid` takes a child out of the phase's process group and session; the job's
    marker in its environment still finds it when the phase ends."""
    pidfile = tmp_path / "escaped.pid"
    agent = make_agent(
        shared_server.url,
        test_command=f"setsid sleep 4646 & echo $! > {pidfile}; {_in_own_session()}; echo out",
    ).start()
    job_id = shared_server.submit(job(agent, "x"))
    escaped = read_pid(pidfile)
    shared_server.wait_job_state(job_id, {"complete"}, timeout=20)
    res = shared_server.result(job_id)
    assert res["test_status"] == 0
    assert "killed 1 leftover process(es): sleep 4646" in res["test_output"]
    assert not pid_alive(escaped)
    assert agent.proc is not None and agent.proc.poll() is None


def test_a_dead_agents_job_closure_ends_children_that_left_its_group(
    shared_server, make_agent, tmp_path
):
    pidfile = tmp_path / "escaped.pid"
    agent = make_agent(
        shared_server.url,
        test_command=(
            f"setsid sleep 4747 & echo $! > {pidfile}; {_in_own_session()}; "
            "echo phase-started; sleep 4242"
        ),
    ).start()
    first = shared_server.submit(job(agent, "x"))
    escaped = read_pid(pidfile)
    wait_for(lambda: "phase-started" in shared_server.output(first), 10, what="output sent")
    agent.signal(signal.SIGKILL)
    agent.wait_exit(5)
    assert pid_alive(escaped)

    agent.start(wait_polling=False)
    shared_server.wait_job_state(first, {"complete"}, timeout=20)
    res = shared_server.result(first)
    assert res["test_status"] == PhaseStatus.AGENT_ERROR
    assert "died during the test phase" in res["test_output"]
    assert "sleep 4747" in res["test_output"] and "sleep 4242" in res["test_output"]
    assert not pid_alive(escaped)
    agent.wait_status(lambda s: s["state"] == "waiting" and s["job_id"] is None, what="idle")


def test_artifacts_that_cannot_be_packed_fail_the_job(shared_server, make_agent):
    """The agent may write no file over 1 MB (as a full disk or a quota refuses a write):
    two 600 KB artifacts, each written by the phase, make a tarball it cannot write."""
    import resource

    agent = make_agent(
        shared_server.url,
        test_command=(
            "mkdir artifacts && for f in a b; do head -c 600000 /dev/urandom > artifacts/$f; "
            "done && echo made"
        ),
    ).start()
    assert agent.proc is not None
    resource.prlimit(agent.proc.pid, resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    job_id = shared_server.submit(job(agent, "x"))
    shared_server.wait_job_state(job_id, {"complete"}, timeout=20)
    res = shared_server.result(job_id)
    assert res["test_status"] == PhaseStatus.AGENT_ERROR
    assert "made" in res["test_output"]
    assert "cannot pack the job's artifacts: [Errno 27] File too large" in res["test_output"]
    art = requests.get(f"{shared_server.url}/v1/result/{job_id}/artifact", timeout=5)
    assert art.status_code != 200
    agent.wait_status(lambda s: s["state"] == "waiting" and s["job_id"] is None, what="idle")
    assert not list((agent.base / "exec").iterdir())  # no half tarball, no job dir


# -- provision records say what happened -----------------------------------------------
def test_skipped_provision_writes_no_provision_record(shared_server, make_agent):
    agent = make_agent(shared_server.url, provision_command="echo provisioned").start()
    skipped = shared_server.submit(job(agent, "x"))  # no provision_data: skipped
    shared_server.wait_job_state(skipped, {"complete"}, timeout=10)
    ran = shared_server.submit(job(agent, "x", provision_data={"url": "u"}))
    shared_server.wait_job_state(ran, {"complete"}, timeout=10)
    with sqlite3.connect(shared_server.db_path) as db:
        rows = db.execute(
            "SELECT job_id, exit_code, detail FROM provision_logs WHERE agent = ?", (agent.name,)
        ).fetchall()
    assert rows == [(ran, 0, "provision_success")]
    assert "provision_status" not in shared_server.result(skipped)


# -- status file writes -----------------------------------------------------------------
def _can_mount_tmpfs(where: Path) -> bool:
    if os.getuid() != 0 or not shutil.which("mount"):
        return False
    where.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)]).returncode
    if ok == 0:
        subprocess.run(["umount", str(where)], check=True)
    return ok == 0


def _chattr_works(probe: Path) -> bool:
    if not shutil.which("chattr"):
        return False
    probe.write_text("")
    ok = subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["chattr", "-i", str(probe)], check=True)
    probe.unlink()
    return ok


def _break_status_file(how: str, agent: AgentProc):
    """Make the agent's status file unwritable; returns the function that undoes it."""
    path = agent.status_path
    if how == "full":
        filler = agent.run_dir / "filler"
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={filler}", "bs=4k", "count=64"], capture_output=True
        )
        return filler.unlink
    if how == "immutable":
        subprocess.run(["chattr", "+i", str(path)], check=True)
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    path.unlink()
    path.mkdir()
    return path.rmdir


@pytest.mark.parametrize("how", ["full", "immutable", "directory"])
def test_status_file_unwritable_is_logged_and_retried(shared_server, make_agent, tmp_path, how):
    agent = make_agent(shared_server.url, polling_interval=0.3, test_command="echo ran")
    if how == "full":
        if not _can_mount_tmpfs(tmp_path / "probe"):
            pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
        mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(agent.run_dir)]
        subprocess.run(mount, check=True)
    elif how == "immutable" and not _chattr_works(tmp_path / "probe"):
        pytest.skip("chattr +i does not work on this filesystem")
    undo = None
    try:
        agent.start()
        undo = _break_status_file(how, agent)
        # It says so, once, naming the file and the error...
        wait_for(lambda: "cannot write status file" in agent.log_text, 10, what="error logged")
        line = next(x for x in agent.log_text.splitlines() if "cannot write status file" in x)
        assert str(agent.status_path) in line
        # ... keeps working (a job, many failed writes), and does not repeat it every time.
        job_id = shared_server.submit(job(agent, "x"))
        shared_server.wait_job_state(job_id, {"complete"}, timeout=10)
        assert shared_server.result(job_id)["test_status"] == 0
        assert agent.log_text.count("cannot write status file") == 1
        assert agent.proc.poll() is None
        # Once it can, it writes again.
        fixed_at = time.time()
        undo()
        undo = None
        agent.wait_status(
            lambda s: (s.get("written_at") or 0) > fixed_at and s["pid"] == agent.proc.pid,
            10,
            what="status written again",
        )
        wait_for(lambda: "written again" in agent.log_text, 5, what="recovery logged")
    finally:
        if undo is not None:
            undo()
        agent.stop()
        if how == "full":
            subprocess.run(["umount", "-l", str(agent.run_dir)])


def test_idle_agent_refreshes_its_status_file(shared_server, make_agent):
    """Idle with a long polling interval, the file is still rewritten (written_at moves)."""
    agent = make_agent(shared_server.url, polling_interval=60)
    agent.start(env={"TF_AGENT_STATUS_REFRESH": "0.5"})
    first = agent.status()["written_at"]
    agent.wait_status(lambda s: s["written_at"] > first + 0.4, 5, what="a refresh")
    assert agent.status()["last_poll"] < first + 1  # no poll since: a refresh, not a poll
