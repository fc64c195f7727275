"""The promise: safe operations never interrupt a job. Real supervisord, the embedded
server, tf-agent processes and jobs that run `sleep`, with the operation run mid-job."""

from __future__ import annotations

import json

import psutil
from fixtures_fleet import ProcessSampler


def start(fleet_env, names, queues=None, **defaults):
    return fleet_env.start(fleet_env.agent_fleet(names, queues, **defaults))


def _busy_with_a_new_environment(fleet_env, name, queue, mark) -> tuple[int, str]:
    """Agent `name` runs a held job from `queue` when the fleet file gives it a new
    environment (LAB_MARK=`mark`); its pid and the job."""
    old_pid = start(fleet_env, [name], {name: [queue]})[name]
    job = fleet_env.hold_running(queue)
    fleet = fleet_env.agent_fleet([name], {name: [queue]})
    fleet["agents"][name]["environment"] = {"LAB_MARK": mark}
    fleet_env.write(fleet)
    return old_pid, job


def test_safe_restart_of_a_busy_agent_waits_for_its_job(fleet_env):
    old_pid = start(fleet_env, ["a1"])["a1"]
    job = fleet_env.hold_running("shared")
    with ProcessSampler(fleet_env) as sampler:
        out = fleet_env.run_releasing("restart", "--safe", "a1", jobs=[job])
    assert "waiting for job" in out.stdout and job in out.stdout
    assert "1/1 back." in out.stdout
    fleet_env.assert_completed(job)
    status = fleet_env.status()["a1"]
    assert status["pid"] != old_pid and status["last_poll"]
    sampler.assert_never_two()


def test_rolling_restart_of_six_agents_two_at_a_time(fleet_env):
    names = [f"r{i}" for i in range(1, 7)]
    queues = {n: [f"q-{n}"] for n in names}
    pids = start(fleet_env, names, queues)
    jobs = [fleet_env.submit_held("q-r1"), fleet_env.submit_held("q-r2")]
    for job in jobs:
        fleet_env.wait_running(job)

    def idle_ones_back(_output: str) -> bool:  # (--json prints only at the end)
        rows = fleet_env.status()
        return all(
            rows[n]["pid"] != pids[n] and rows[n]["process"] == "RUNNING" and rows[n]["last_poll"]
            for n in names[2:]
        )

    # the jobs end only once the idle agents are back: a roll that waited for them hangs
    with ProcessSampler(fleet_env) as sampler:
        out = fleet_env.run_releasing(
            "restart",
            "--safe",
            "--all",
            "--max-parallel",
            "2",
            "--json",
            jobs=jobs,
            when=idle_ones_back,
            timeout=60,
        )
    report = json.loads(out.stdout)
    assert report["ok"] and not report["timed_out"]
    assert {a["name"] for a in report["agents"] if a["stage"] == "done"} == set(names)
    for job in jobs:
        fleet_env.assert_completed(job)
    status = fleet_env.status()
    assert all(status[n]["pid"] != pids[n] for n in names)
    # the busy agents did not hold up the idle ones: theirs were the last new processes
    started = {n: psutil.Process(status[n]["pid"]).create_time() for n in names}
    assert {n for n in sorted(names, key=lambda n: started[n])[-2:]} == {"r1", "r2"}
    sampler.assert_never_two()


def test_up_after_changing_queues_restarts_after_the_job(fleet_env):
    pids = start(fleet_env, ["u1", "u2"], {"u1": ["q1"], "u2": ["q2"]})
    job = fleet_env.hold_running("q1")
    fleet_env.write(fleet_env.agent_fleet(["u1", "u2"], {"u1": ["q1", "q1-extra"], "u2": ["q2"]}))
    with ProcessSampler(fleet_env) as sampler:
        out = fleet_env.run_releasing("up", jobs=[job])
    assert "1 restart, 1 unchanged" in out.stdout
    fleet_env.assert_completed(job)
    status = fleet_env.status()
    assert status["u1"]["pid"] != pids["u1"] and status["u2"]["pid"] == pids["u2"]
    # the new process reads the new config: it takes jobs from the new queue
    extra = fleet_env.submit("q1-extra", 0)
    fleet_env.assert_completed(extra)
    sampler.assert_never_two()


def test_up_after_changing_environment_swaps_the_program_after_the_job(fleet_env):
    old_pid, job = _busy_with_a_new_environment(fleet_env, "e1", "qe", "blue")
    queued = fleet_env.submit("qe", 0, "echo mark=$LAB_MARK")
    with ProcessSampler(fleet_env) as sampler:
        out = fleet_env.run_releasing("up", jobs=[job])
    assert "1 replace" in out.stdout
    fleet_env.assert_completed(job)
    # the draining agent took no new job: the queued one ran under the new program
    fleet_env.assert_completed(queued)
    new_pid = fleet_env.status()["e1"]["pid"]
    assert new_pid != old_pid
    output = _output(fleet_env, queued)
    assert "mark=blue" in output, output
    sampler.assert_never_two()
    assert sampler.pids("e1") == {old_pid, new_pid}
    # the agent's log, in order: the old process finished its job, stayed down on the
    # drain flag and exited 0; then the new process started and ran the queued job
    log = fleet_env.log("e1")
    order = [
        f"starting as e1 (pid {old_pid})",
        f"job {job} done",
        "drain flag says hold",
        "exiting with status 0",
        f"starting as e1 (pid {new_pid})",
        f"starting job {queued}",
    ]
    positions = [log.find(line) for line in order]
    assert -1 not in positions and positions == sorted(positions), (positions, log)
    assert log.count("starting job") == 2, log


def _output(fleet_env, job_id):
    import requests

    return requests.get(f"{fleet_env.server_url}/v1/result/{job_id}/log/output", timeout=10).text


def test_up_after_removing_an_agent_stops_it_after_the_job(fleet_env):
    start(fleet_env, ["k1", "k2"], {"k1": ["qk1"], "k2": ["qk2"]})
    job = fleet_env.hold_running("qk2")
    fleet_env.write(fleet_env.agent_fleet(["k1"], {"k1": ["qk1"]}))
    with ProcessSampler(fleet_env) as sampler:
        out = fleet_env.run_releasing("up", jobs=[job])
    assert "1 remove, 1 unchanged" in out.stdout
    fleet_env.assert_completed(job)
    assert set(fleet_env.status()) == {"k1"}
    assert not (fleet_env.state_dir / "supervisor/conf.d/k2.conf").exists()
    assert not (fleet_env.state_dir / "agents/k2").exists()
    assert "k2" not in fleet_env.run("plan").stdout
    sampler.assert_never_two()
    # The server lists k2 until its agent TTL, as removed by the fleet, not as waiting.
    shown = _server_agent(fleet_env, "k2")
    assert (shown["state"], shown["comment"]) == ("offline", "removed from the fleet by tf-fleet")
    assert "removed: 1" in _page(fleet_env, "/agents")


def _server_agent(fleet_env, name):
    import requests

    return requests.get(f"{fleet_env.server_url}/v1/agents/data/{name}", timeout=10).json()


def _page(fleet_env, path):
    import requests

    return requests.get(f"{fleet_env.server_url}{path}", timeout=10).text


def test_drain_wait_returns_when_idle_and_takes_no_new_job(fleet_env):
    start(fleet_env, ["d1"], {"d1": ["qd"]}, polling_interval=0.25)
    running = fleet_env.hold_running("qd")
    pid = fleet_env.status()["d1"]["pid"]
    out = fleet_env.run_releasing(
        "drain", "d1", "--wait", "--reason", "swap the <usb> hub", jobs=[running]
    )
    queued = fleet_env.submit("qd", 0)
    assert "1/1 idle." in out.stdout
    fleet_env.assert_completed(running)
    # What `testflinger-cli agent-status` and the Agents page read: offline, and why.
    shown = _server_agent(fleet_env, "d1")
    assert (shown["state"], shown["comment"]) == (
        "offline",
        "drained by tf-fleet: swap the <usb> hub",
    )
    page = _page(fleet_env, "/agents")
    assert "drained: 1" in page and "swap the &lt;usb&gt; hub" in page

    def still_drained() -> bool:
        row = fleet_env.status()["d1"]
        return (
            fleet_env.job_state(queued) == "waiting"
            and row["state"] == "drained"
            and row["pid"] == pid
            and [p.pid for p in fleet_env.agent_processes("d1")] == [pid]
        )

    # over four polling intervals (0.25 s) the job stays queued and the agent stays drained
    fleet_env.hold_for(1.0, still_drained, "the drained agent left the queued job alone")
    assert f"starting job {queued}" not in fleet_env.log("d1")
    assert "d1" in fleet_env.run("status").stdout
    fleet_env.run("resume", "d1")
    fleet_env.assert_completed(queued)
    assert f"starting job {queued}" in fleet_env.log("d1")
    assert _server_agent(fleet_env, "d1")["comment"] == ""


def test_down_refuses_mid_job_and_down_safe_waits(fleet_env):
    start(fleet_env, ["s1", "s2"], {"s1": ["qs1"], "s2": ["qs2"]})
    job = fleet_env.hold_running("qs1")
    refused = fleet_env.run("down", check=False)
    assert refused.returncode == 1 and "s1 is busy" in refused.stderr
    with ProcessSampler(fleet_env) as sampler:
        fleet_env.run_releasing("down", "--safe", jobs=[job])
    assert fleet_env.processes() == []
    sampler.assert_never_two()
    fleet_env.run("up")  # the server's database kept what the agents reported
    fleet_env.assert_completed(job, timeout=5)
    fleet_env.wait_for(
        lambda: {s["process"] for s in fleet_env.status().values()} == {"RUNNING"},
        what="both agents to run again",
    )


def test_agent_that_crashes_after_restart_stops_the_roll(fleet_env):
    names = ["c1", "c2", "c3"]
    pids = start(fleet_env, names)
    # c1's config now makes tf-agent exit at start (an unknown key)
    conf = fleet_env.state_dir / "agents/c1/testflinger-agent.conf"
    conf.write_text(conf.read_text() + "not_a_key: 1\n")
    out = fleet_env.run("restart", "--safe", "--all", check=False)
    assert out.returncode == 1
    assert "c1: FAILED: did not come back" in out.stderr
    assert "left untouched: c2, c3" in out.stderr
    status = fleet_env.status()
    assert status["c2"]["pid"] == pids["c2"] and status["c3"]["pid"] == pids["c3"]


def test_timeout_leaves_the_restart_pending_and_the_job_running(fleet_env):
    old_pid = start(fleet_env, ["t1"], {"t1": ["qt"]})["t1"]
    job = fleet_env.hold_running("qt")
    out = fleet_env.run("restart", "--safe", "t1", "--timeout", "2s", check=False)
    assert out.returncode == 1
    assert "timed out" in out.stderr and f"t1: waiting for job {job}" in out.stderr
    status = fleet_env.status()["t1"]
    assert status["pid"] == old_pid and status["restart_pending"] is True
    fleet_env.release(job)
    fleet_env.same_process_until_done("t1", old_pid, job)
    fleet_env.assert_completed(job)
    fleet_env.wait_for(
        lambda: fleet_env.status()["t1"]["pid"] not in (None, old_pid),
        what="the pending restart to happen after the job",
    )


def test_restart_file_method(fleet_env):
    old_pid = start(fleet_env, ["f1"], {"f1": ["qf"]})["f1"]
    job = fleet_env.hold_running("qf")
    out = fleet_env.run_releasing("restart", "--safe", "f1", "--method", "file", jobs=[job])
    assert "1/1 back." in out.stdout
    fleet_env.assert_completed(job)
    assert fleet_env.status()["f1"]["pid"] != old_pid
    assert not (fleet_env.root / "restart/TESTFLINGER-DEVICE-RESTART-f1").exists()


def test_hard_restart_refuses_a_busy_agent(fleet_env):
    start(fleet_env, ["h1"], {"h1": ["qh"]})
    job = fleet_env.hold_running("qh")
    pid = fleet_env.status()["h1"]["pid"]
    out = fleet_env.run("restart", "h1", check=False)
    assert out.returncode == 1 and f"job {job}" in out.stderr
    fleet_env.release(job)
    fleet_env.same_process_until_done("h1", pid, job)
    fleet_env.assert_completed(job)


def test_safe_restart_of_an_upstream_like_agent(fleet_env):
    old_pid = fleet_env.start(fleet_env.upstream_fleet(["up1"], {"up1": ["qu"]}))["up1"]
    job = fleet_env.hold_running("qu")
    with ProcessSampler(fleet_env) as sampler:
        out = fleet_env.run_releasing(
            "restart", "--safe", "up1", jobs=[job], when="waiting for its job to end"
        )
    assert "waiting for its job to end" in out.stdout
    assert "1/1 back." in out.stdout
    fleet_env.assert_completed(job)
    assert fleet_env.status()["up1"]["pid"] != old_pid
    sampler.assert_never_two()


def test_up_no_wait_asks_and_the_next_up_finishes(fleet_env):
    old_pid, job = _busy_with_a_new_environment(fleet_env, "n1", "qn", "green")
    out = fleet_env.run("up", "--no-wait")
    assert "asked" in out.stdout
    assert "held" in fleet_env.run("status").stdout
    assert "replace    n1" in fleet_env.run("plan").stdout
    fleet_env.release(job)
    fleet_env.same_process_until_done("n1", old_pid, job)
    fleet_env.assert_completed(job)
    fleet_env.wait_for(
        lambda: fleet_env.status()["n1"]["process"] == "EXITED",
        what="the held agent to exit once idle",
    )
    out = fleet_env.run("up")
    assert "1 replace" in out.stdout
    status = fleet_env.wait_for(
        lambda: (row := fleet_env.status()["n1"])["process"] == "RUNNING" and row,
        what="the new program to run",
    )
    assert status["pid"] != old_pid
    assert "replace" not in fleet_env.run("plan").stdout
