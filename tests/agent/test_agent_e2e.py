"""tf-agent as a real process against the real local server on loopback."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sys
import tarfile
import time

import pytest
import requests
from fixtures_agent import STATUS_KEYS, AgentProc, holds_until, job, pid_alive, read_pid, wait_for
from fixtures_server import free_port, running_server, tar_gz, tar_member

from multiagent.vocabulary import STOPWAITSECS_ENV

PY = sys.executable
CONNECTOR = f"{PY} -m multiagent.connectors.local"
GRANDCHILD = "sh -c 'sleep 600 & echo $! > {pidfile}; wait'"


def log_output(server, job_id: str, phase: str) -> str:
    resp = requests.get(
        f"{server.url}/v1/result/{job_id}/log/output", params={"phase": phase}, timeout=5
    )
    if resp.status_code != 200:
        return ""
    return resp.json().get("output", {}).get(phase, {}).get("log_data", "")


def cancel(server, job_id: str) -> None:
    resp = requests.post(
        f"{server.url}/v1/job/{job_id}/action", json={"action": "cancel"}, timeout=5
    )
    resp.raise_for_status()


def test_full_job_end_to_end(shared_server, make_agent, tmp_path):
    port = free_port()
    agent = make_agent(
        shared_server.url,
        setup_command="echo setup on $agent_id",
        provision_command=f"{CONNECTOR} provision",
        firmware_update_command=f"{CONNECTOR} firmware_update",
        test_command=f"{CONNECTOR} test",
        reserve_command=f"{CONNECTOR} reserve",
        cleanup_command="echo cleanup done",
    ).start("-p", str(port))
    gate = tmp_path / "release"  # the phase runs until the test has looked at it
    cmds = (
        "echo first-line; mkdir -p artifacts/sub; echo art > artifacts/sub/a.txt; "
        f"while [ ! -e {gate} ]; do sleep 0.05; done; echo second-line"
    )
    job_id = shared_server.submit(
        job(
            agent,
            cmds,
            provision_data={"url": "http://example/img"},
            firmware_update_data={"version": "1.2"},
            reserve_data={"timeout": 5},
        )
    )
    # Output is streamed while the phase still runs.
    wait_for(
        lambda: "first-line" in log_output(shared_server, job_id, "test"), 6, what="streamed output"
    )
    assert shared_server.job_state(job_id) == "test"
    assert agent.status()["state"] == "test" and agent.status()["job_id"] == job_id
    gate.touch()
    shared_server.wait_job_state(job_id, {"complete"}, timeout=15)
    res = shared_server.result(job_id)
    for phase in ("setup", "provision", "firmware_update", "test", "reserve", "cleanup"):
        assert res[f"{phase}_status"] == 0, (phase, res)
    assert "allocate_status" not in res  # no allocate_data: skipped
    assert "setup on " + agent.name in res["setup_output"]
    assert "second-line" in res["test_output"]
    assert res["device_info"]["device_ip"] == "127.0.0.1"
    art = requests.get(f"{shared_server.url}/v1/result/{job_id}/artifact", timeout=5)
    assert art.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(art.content)) as tar:
        names = tar.getnames()
        assert "artifacts/sub/a.txt" in names
        assert tar_member(tar, "artifacts/sub/a.txt") == b"art\n"
    st = agent.wait_status(lambda s: s["state"] == "waiting", what="idle again")
    assert st["job_id"] is None and st["phase"] is None
    assert set(st) == STATUS_KEYS
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert f'jobs_total{{agent_id="{agent.name}"}} 1' in metrics
    assert "phase_duration_seconds_count" in metrics
    assert not list((agent.base / "exec").iterdir())  # rundir removed


@pytest.mark.parametrize("how", ["cancel", "global_timeout", "output_timeout"])
def test_stop_condition_kills_process_group(shared_server, make_agent, tmp_path, how):
    pidfile = tmp_path / f"gc-{how}.pid"
    agent = make_agent(
        shared_server.url, test_command=f"{CONNECTOR} test", cleanup_command="echo cleanup ran"
    ).start()
    extra = {"global_timeout": 2} if how == "global_timeout" else {}
    if how == "output_timeout":
        extra = {"output_timeout": 1}
    cmds = "echo started; " + GRANDCHILD.format(pidfile=pidfile)
    job_id = shared_server.submit(job(agent, cmds, **extra))
    grandchild = read_pid(pidfile)
    assert pid_alive(grandchild)
    if how == "cancel":
        cancel(shared_server, job_id)
    agent.wait_status(lambda s: s["job_id"] is None and s["state"] == "waiting", 10, what="job end")
    wait_for(lambda: not pid_alive(grandchild), 3, what="grandchild gone")
    res = shared_server.result(job_id)
    assert res["test_status"] == 247
    assert res["cleanup_status"] == 0 and "cleanup ran" in res["cleanup_output"]
    expected = {
        "cancel": "cancel",
        "global_timeout": "Global timeout",
        "output_timeout": "Output timeout",
    }[how]
    assert expected in res["test_output"]
    assert res["job_state"] == ("cancelled" if how == "cancel" else "complete")


@pytest.mark.parametrize("cleanup", ["short", "too long"])
def test_sigterm_during_job_runs_cleanup_within_stopwaitsecs(
    shared_server, make_agent, tmp_path, cleanup
):
    """A forced stop (supervisord's SIGTERM) ends the phase, then cleanup runs, as upstream;
    a cleanup longer than stopwaitsecs allows is ended in time to close the job itself."""
    pidfile = tmp_path / "gc.pid"
    cleanup_pid = tmp_path / "cleanup.pid"
    command = "echo cleanup ran" if cleanup == "short" else f"echo $$ > {cleanup_pid}; sleep 60"
    agent = make_agent(
        shared_server.url,
        test_command=GRANDCHILD.format(pidfile=pidfile),
        cleanup_command=command,
    ).start(env={STOPWAITSECS_ENV: "7"})
    job_id = shared_server.submit(job(agent, "x"))
    grandchild = read_pid(pidfile)
    agent.signal(signal.SIGTERM)
    assert agent.wait_exit(10) == 0
    wait_for(lambda: not pid_alive(grandchild), 3, what="grandchild gone")
    res = shared_server.result(job_id)
    assert res["job_state"] == "cancelled" and res["test_status"] == 247
    if cleanup == "short":
        assert res["cleanup_status"] == 0 and "cleanup ran" in res["cleanup_output"]
    else:
        assert not pid_alive(read_pid(cleanup_pid))
        assert res["cleanup_status"] == 247
        assert "no time left for cleanup" in res["cleanup_output"]
    assert agent.status()["state"] == "stopped"


def test_sigterm_idle(shared_server, make_agent):
    agent = make_agent(shared_server.url, polling_interval=30).start()
    start = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.wait_exit(5) == 0
    assert time.monotonic() - start < 3  # at once, not after its 30 s polling sleep
    data = requests.get(f"{shared_server.url}/v1/agents/data/{agent.name}", timeout=5).json()
    assert data["state"] == "offline"


@pytest.mark.parametrize("trigger", ["sigusr1", "file"])
def test_restart_when_idle(shared_server, make_agent, trigger):
    agent = make_agent(shared_server.url, polling_interval=30).start()
    start = time.monotonic()
    if trigger == "sigusr1":
        agent.signal(signal.SIGUSR1)
    else:
        agent.restart_file.write_text("")
    assert agent.wait_exit(5) == 1
    # at once, not after its 30 s polling sleep (the figure itself is measured in bench/)
    assert time.monotonic() - start < 3
    st = agent.status()
    assert st["state"] == "restarting" and st["restart_pending"] is True
    assert not agent.restart_file.exists()
    data = requests.get(f"{shared_server.url}/v1/agents/data/{agent.name}", timeout=5).json()
    assert data["state"] == "offline" and "restarting" in data["comment"]


@pytest.mark.usefixtures("inotify_instance")
def test_restart_file_seen_at_once_when_idle(shared_server, make_agent):
    """inotify: the restart file is seen as fast as SIGUSR1, not after the old 0.5 s tick."""
    agent = make_agent(shared_server.url, polling_interval=30).start()
    wait_for(lambda: "idle wake-ups: inotify" in agent.log_text, 5, what="inotify in use")
    start = time.monotonic()
    agent.restart_file.write_text("")
    assert agent.wait_exit(5) == 1
    # woken by the event, not by the 5 s direct look that backs inotify up
    assert time.monotonic() - start < 2


@pytest.mark.usefixtures("inotify_instance")
def test_unrelated_files_change_nothing(shared_server, make_agent):
    agent = make_agent(shared_server.url, polling_interval=30).start()
    wait_for(lambda: "idle wake-ups: inotify" in agent.log_text, 5, what="inotify in use")
    before = agent.status_path.read_bytes(), agent.status_path.stat().st_mtime_ns
    for d in (agent.restart_dir, agent.run_dir):
        for name in (
            "unrelated",
            f"TESTFLINGER-DEVICE-RESTART-{agent.name}x",
            f"{agent.name}.drainx",
            "other-agent.drain",
        ):
            (d / name).write_text("hold")
            (d / name).unlink()
    (agent.run_dir / "other-agent.json").write_text("{}")
    # Nothing for a while (no exit, no drained status), then the real restart file: the
    # agent exits for it alone, so none of the names above woke it into a restart.
    start = time.monotonic()
    holds_until(
        lambda: (
            agent.proc.poll() is None
            and (agent.status_path.read_bytes(), agent.status_path.stat().st_mtime_ns) == before
        ),
        lambda: time.monotonic() - start > 1.0,
        what="agent running, status file untouched",
    )
    agent.restart_file.write_text("")  # still listening
    assert agent.wait_exit(3) == 1
    assert agent.status()["restart_reason"] == "restart file"


def test_polling_fallback_without_inotify(shared_server, make_agent):
    agent = make_agent(shared_server.url, polling_interval=30)
    agent.start(env={"TF_AGENT_NO_INOTIFY": "1", "TF_AGENT_NO_DNOTIFY": "1"})
    wait_for(
        lambda: "idle wake-ups: looking every 0.5 s" in agent.log_text, 5, what="polling fallback"
    )
    agent.drain_file.write_text("drain")
    agent.wait_status(lambda s: s["state"] == "drained", 3, what="drained")
    agent.drain_file.unlink()
    start = time.monotonic()
    agent.restart_file.write_text("")
    assert agent.wait_exit(5) == 1
    assert time.monotonic() - start < 3  # the 0.5 s look, not the 30 s poll
    assert "inotify" not in agent.log_text


@pytest.mark.parametrize("trigger", ["sigusr1", "file", "file, dnotify"])
def test_restart_when_busy_finishes_job(shared_server, make_agent, trigger, tmp_path):
    """`file, dnotify`: an agent without an inotify instance (all of a user's taken by
    other agents; here TF_AGENT_NO_INOTIFY) is woken by dnotify; a busy restart dir
    neither kills it (SIGIO) nor stalls it."""
    gate = tmp_path / "release"  # the job runs until the restart is seen pending
    agent = make_agent(
        shared_server.url,
        polling_interval=2,
        test_command=f"while [ ! -e {gate} ]; do sleep 0.05; done; echo slept",
    )
    dnotify = trigger.endswith("dnotify")
    agent.start(env={"TF_AGENT_NO_INOTIFY": "1"} if dnotify else None)
    if dnotify:
        wait_for(lambda: "idle wake-ups: dnotify on" in agent.log_text, 5, what="dnotify")
        for i in range(100):
            (agent.restart_dir / f"other-{i}").write_text("")
        agent.drain_file.write_text("drain")
        agent.wait_status(lambda s: s["state"] == "drained", 5, what="drained")
        agent.drain_file.unlink()
    job_id = shared_server.submit(job(agent, "x"))
    agent.wait_status(lambda s: s["state"] == "test", 10, what="test phase")
    if trigger == "sigusr1":
        agent.signal(signal.SIGUSR1)
    else:
        for i in range(100 if dnotify else 0):
            (agent.restart_dir / f"more-{i}").write_text("")
        agent.restart_file.write_text("")
    agent.wait_status(lambda s: s["restart_pending"], 4, what="restart pending")
    assert agent.proc.poll() is None
    gate.touch()
    assert agent.wait_exit(15) == 1
    res = shared_server.result(job_id)
    assert res["job_state"] == "complete" and res["test_status"] == 0
    assert "slept" in res["test_output"]
    assert not agent.restart_file.exists()
    assert "Traceback" not in agent.log_text


@pytest.mark.parametrize("watch", ["inotify", "dnotify"])
def test_untrusted_restart_files_ignored(shared_server, make_agent, tmp_path, watch, request):
    if watch == "inotify":
        request.getfixturevalue("inotify_instance")
    env = {"TF_AGENT_NO_INOTIFY": "1"} if watch == "dnotify" else None
    agent = make_agent(shared_server.url, polling_interval=30).start(env=env)
    wait_for(lambda: f"idle wake-ups: {watch} on" in agent.log_text, 5, what=watch)
    target = tmp_path / "target"
    target.write_text("")
    agent.restart_file.symlink_to(target)
    # The agent looked at it, said why it ignores it, and kept running.
    wait_for(lambda: "not a regular file" in agent.log_text, 5, what="symlink looked at")
    assert agent.proc.poll() is None
    agent.restart_file.unlink()
    if os.getuid() == 0:
        # Made foreign before it appears under its name: no window as a root-owned file.
        staged = agent.restart_dir / "staged"
        staged.write_text("")
        os.chown(staged, 65534, 65534)
        staged.rename(agent.restart_file)
        wait_for(lambda: "owned by uid 65534" in agent.log_text, 5, what="foreign file seen")
        assert agent.proc.poll() is None
        agent.restart_file.unlink()
    log = agent.log_text
    assert log.count("not a regular file") == 1  # warned once, not every check
    if os.getuid() == 0:
        assert log.count("owned by uid 65534") == 1
    agent.restart_file.write_text("")  # a valid one is still honoured
    assert agent.wait_exit(3) == 1


def test_second_instance_refused(shared_server, make_agent):
    agent = make_agent(shared_server.url, polling_interval=30).start()
    second = AgentProc.__new__(AgentProc)
    second.__dict__.update(agent.__dict__)
    second.proc = None
    second.stderr_path = agent.base / "second.stderr"
    second.start(wait_polling=False)
    assert second.wait_exit(5) == 3
    err = second.stderr_path.read_text()
    assert f"pid {agent.proc.pid}" in err and err.count("\n") == 1
    assert agent.proc.poll() is None


@pytest.mark.parametrize("member", ["test/hello.txt", "test/../../x", "/tmp/abs-x"])
def test_attachments(shared_server, make_agent, member):
    agent = make_agent(shared_server.url, test_command="cat attachments/test/hello.txt").start()
    job_id = shared_server.submit(
        job(agent, "x") | {"test_data": {"test_cmds": "x", "attachments": [{"agent": "hello.txt"}]}}
    )
    payload = tar_gz({member: b"hello attachment\n"})
    resp = requests.post(
        f"{shared_server.url}/v1/job/{job_id}/attachments",
        files={"file": ("file", payload)},
        timeout=5,
    )
    resp.raise_for_status()
    shared_server.wait_job_state(job_id, {"complete"}, timeout=10)
    res = shared_server.result(job_id)
    if member == "test/hello.txt":
        assert res["test_status"] == 0 and "hello attachment" in res["test_output"]
    else:
        assert res["setup_status"] != 0 and "test_status" not in res
        assert "attachments rejected" in res["setup_output"]
        assert not os.path.exists("/tmp/abs-x")
        assert not (agent.base / "x").exists() and not (agent.base / "exec" / "x").exists()


def test_drain_and_hold(shared_server, make_agent):
    agent = make_agent(shared_server.url, polling_interval=0.2, test_command="echo ran").start()
    agent.drain_file.write_text("drain\ncable  swap <rack 3>\n")  # as `drain --reason` writes
    agent.wait_status(lambda s: s["state"] == "drained" and s["drained"], 3, what="drained")
    # The lab sees it as upstream's admins show theirs: offline, with the reason.
    shown = wait_for(
        lambda: (a := shared_server.agent(agent.name)).get("state") == "offline" and a,
        what="drained agent offline on the server",
    )
    assert shown["comment"] == "drained by tf-fleet: cable swap <rack 3>"
    page = requests.get(f"{shared_server.url}/agents?state=drained", timeout=5).text
    row = page[page.index(f'id="agent-{agent.name}"') :].split("</tr>")[0]
    assert '<span class="st drained">drained</span>' in row
    assert "drained by tf-fleet: cable swap &lt;rack 3&gt;" in row
    assert re.search(r"drained: [1-9]", page)  # counted apart from the waiting
    job_id = shared_server.submit(job(agent, "x"))
    # Three more rounds of the agent's loop (each rewrites the status file), the job
    # waiting all along.
    writes = agent.status_writes()
    holds_until(
        lambda: shared_server.job_state(job_id) == "waiting" and agent.status().get("drained"),
        lambda: writes(3),
        what="job waiting while drained",
    )
    agent.drain_file.unlink()
    shared_server.wait_job_state(job_id, {"complete"}, timeout=10)
    agent.wait_status(lambda s: s["state"] == "waiting" and not s["drained"], what="undrained")
    wait_for(
        lambda: (a := shared_server.agent(agent.name))["state"] == "waiting" and not a["comment"],
        what="resumed agent waiting, its drain comment gone",
    )
    agent.drain_file.write_text("hold")
    assert agent.wait_exit(3) == 0
    assert agent.status()["state"] == "stopped"
    # Starting while held: exits 0 at once.
    agent.start(wait_polling=False)
    assert agent.wait_exit(5) == 0


def test_drain_outlives_a_restart_and_a_resume_while_down(shared_server, make_agent):
    """A drained agent that restarts comes back drained (its flag says so); one resumed
    while it was down comes back waiting, the drain's comment gone."""
    agent = make_agent(shared_server.url, polling_interval=0.2).start()
    agent.drain_file.write_text("drain\nfirmware\n")
    agent.wait_status(lambda s: s["state"] == "drained", 3, what="drained")
    agent.restart_file.touch()
    assert agent.wait_exit(5) == 1
    assert shared_server.agent(agent.name)["comment"] == "drained by tf-fleet: firmware"
    agent.start(wait_polling=False)
    agent.wait_status(lambda s: s["state"] == "drained", 5, what="drained again")
    shown = shared_server.agent(agent.name)
    assert (shown["state"], shown["comment"]) == ("offline", "drained by tf-fleet: firmware")
    agent.signal(signal.SIGTERM)
    assert agent.wait_exit(5) == 0
    agent.drain_file.unlink()
    agent.start()
    wait_for(
        lambda: (a := shared_server.agent(agent.name))["state"] == "waiting" and not a["comment"],
        what="resumed while down: waiting, no comment",
    )


def test_an_agent_added_again_after_its_removal_takes_jobs(shared_server, make_agent):
    """The server still lists a name tf-fleet removed from the fleet; an agent of that
    name added back is not held by that last word, as it would be by an admin's offline."""
    agent = make_agent(shared_server.url, polling_interval=0.2)
    body = {"state": "offline", "comment": "removed from the fleet by tf-fleet"}
    requests.post(
        f"{shared_server.url}/v1/agents/data/{agent.name}", json=body, timeout=5
    ).raise_for_status()
    agent.start()  # returns once it has polled for a job
    shown = shared_server.agent(agent.name)
    assert (shown["state"], shown["comment"]) == ("waiting", "")


def test_outcome_survives_server_outage(tf_server, make_agent, tmp_path):
    gate = tmp_path / "release"  # the job ends once the server is down
    agent = make_agent(
        tf_server.url,
        test_command=(
            f"echo before; while [ ! -e {gate} ]; do sleep 0.05; done; "
            "mkdir -p artifacts; echo kept > artifacts/k.txt; echo after"
        ),
    )
    agent.start()
    job_id = tf_server.submit(job(agent, "x"))
    agent.wait_status(lambda s: s["state"] == "test", what="test phase")
    tf_server.stop()
    gate.touch()
    results = agent.base / "results"
    wait_for(lambda: results.exists() and list(results.iterdir()), 10, what="stored outcome")
    assert agent.status()["server_reachable"] is False
    tf_server.start()
    tf_server.wait_job_state(job_id, {"complete"}, timeout=40)
    wait_for(lambda: not list(results.iterdir()), 5, what="store emptied")
    res = tf_server.result(job_id)
    assert res["test_status"] == 0
    assert res["test_output"].count("after") == 1  # unsent fragments delivered once
    art = requests.get(f"{tf_server.url}/v1/result/{job_id}/artifact", timeout=5)
    with tarfile.open(fileobj=io.BytesIO(art.content)) as tar:
        assert tar_member(tar, "artifacts/k.txt") == b"kept\n"
    assert agent.log_text.count(f"delivered stored outcome of job {job_id}") == 1
    agent.wait_status(lambda s: s["server_reachable"] and s["state"] == "waiting")


def test_token_auth(tmp_path, make_agent):
    token_file = tmp_path / "server-token"
    token_file.write_text("s3cret-token")
    with running_server(tmp_path, "auth", ["--token-file", str(token_file)]) as server:
        refresh = tmp_path / "refresh.json"
        refresh.write_text(json.dumps({"refresh_token": "s3cret-token"}))
        agent = make_agent(server.url, test_command="echo authed").start(
            "--token-file", str(refresh)
        )
        resp = requests.post(
            server.url + "/v1/job",
            json=job(agent, "x"),
            timeout=5,
            headers={"Authorization": "Bearer s3cret-token"},
        )
        job_id = resp.json()["job_id"]
        server.wait_job_state(job_id, {"complete"}, timeout=10)
        assert "authed" in server.result(job_id)["test_output"]


def _set_server_state(server, agent, state: str, comment: str = "") -> None:
    resp = requests.post(
        f"{server.url}/v1/agents/data/{agent.name}",
        json={"state": state, "comment": comment},
        timeout=5,
    )
    resp.raise_for_status()


def test_server_states(shared_server, make_agent):
    agent = make_agent(shared_server.url, test_command="echo ran").start()
    _set_server_state(shared_server, agent, "maintenance", "lab work")
    agent.wait_status(lambda s: s["state"] == "maintenance", 3, what="maintenance")
    job_id = shared_server.submit(job(agent, "x"))
    writes = agent.status_writes()
    holds_until(
        lambda: shared_server.job_state(job_id) == "waiting",
        lambda: writes(3),
        what="job waiting during maintenance",
    )
    _set_server_state(shared_server, agent, "waiting")
    shared_server.wait_job_state(job_id, {"complete"}, timeout=10)
    agent.wait_status(lambda s: s["state"] == "waiting", what="waiting")
    _set_server_state(shared_server, agent, "restart", "please")
    assert agent.wait_exit(3) == 1
    assert agent.status()["restart_reason"] == "server"


def test_recovery_failure_sets_offline(shared_server, make_agent):
    agent = make_agent(
        shared_server.url, provision_command="exit 46", test_command="echo never"
    ).start()
    job_id = shared_server.submit(job(agent, "x", provision_data={"url": "u"}))
    shared_server.wait_job_state(job_id, {"complete"}, timeout=10)
    res = shared_server.result(job_id)
    assert res["provision_status"] == 46 and "test_status" not in res
    agent.wait_status(lambda s: s["state"] == "offline", 3, what="offline")
    data = requests.get(f"{shared_server.url}/v1/agents/data/{agent.name}", timeout=5).json()
    assert data["state"] == "offline" and "Recovery failed" in data["comment"]
    # A restart keeps the offline set for a failed recovery (and its comment).
    agent.signal(signal.SIGUSR1)
    assert agent.wait_exit(3) == 1
    agent.start(wait_polling=False)
    agent.wait_status(
        lambda s: s["state"] == "offline" and s["pid"] == agent.proc.pid,
        5,
        what="offline after restart",
    )
    data = requests.get(f"{shared_server.url}/v1/agents/data/{agent.name}", timeout=5).json()
    assert data["state"] == "offline" and "Recovery failed" in data["comment"]


def test_allocate_waits_until_cancelled(shared_server, make_agent):
    agent = make_agent(
        shared_server.url,
        allocate_command=f"{CONNECTOR} allocate",
        reserve_command="echo reserve-should-not-run",
        cleanup_command="echo cleaned",
    )
    agent.start()
    job_id = shared_server.submit(
        job(agent, None, allocate_data={"allocate": True}, reserve_data={"timeout": 1})
    )
    shared_server.wait_job_state(job_id, {"allocated"}, timeout=10)
    assert shared_server.result(job_id)["device_info"]["device_ip"] == "127.0.0.1"
    cancel(shared_server, job_id)
    agent.wait_status(lambda s: s["state"] == "waiting" and s["job_id"] is None, 10, what="job end")
    res = shared_server.result(job_id)
    assert res["allocate_status"] == 0 and res["cleanup_status"] == 0
    assert "reserve_status" not in res and res["job_state"] == "cancelled"
