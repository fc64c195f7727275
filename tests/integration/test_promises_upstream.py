"""README: "An upstream agent knows no drain flag: it gets SIGUSR1 and its respawned process
is stopped before its first poll." Drain, replace and remove of upstream-like agents
(tests/upstream_like_agent.py), each with a job in flight: the job completes, none is
interrupted, and never two processes hold a name."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from fixtures_fleet import ProcessSampler

# Upstream's agent runs `test_command` in the job's directory beside testflinger.json.
RUN_TEST_CMDS = (
    'python3 -c "import json, subprocess, sys; sys.exit(subprocess.call('
    "json.load(open('testflinger.json'))['test_data']['test_cmds'], shell=True))\""
)


def _drain_mid_job(fleet_env) -> tuple[dict[str, int], str]:
    pids = fleet_env.start(fleet_env.upstream_fleet(["ud1", "ud2"], {"ud1": ["qd"]}))
    job = fleet_env.hold_running("qd")
    with ProcessSampler(fleet_env) as sampler:
        out = fleet_env.run_releasing("drain", "ud1", "--wait", jobs=[job])
        fleet_env.same_process_until_done("ud1", pids["ud1"], job)
    assert "1/1 idle." in out.stdout
    fleet_env.assert_completed(job)
    sampler.assert_never_two()
    assert fleet_env.status()["ud2"]["pid"] == pids["ud2"]  # the other agent untouched
    return pids, job


def _stays_drained_until_resumed(fleet_env, name: str, queue: str, pid: int) -> None:
    """A job queued for drained agent `name` stays queued over three polling intervals
    (0.5 s) while the agent keeps running as `pid`; once resumed, it runs the job."""
    queued = fleet_env.submit(queue, 0)

    def drained() -> bool:
        pids_now = [p.pid for p in fleet_env.agent_processes(name)]
        return fleet_env.job_state(queued) == "waiting" and pids_now == [pid]

    fleet_env.hold_for(1.5, drained, "the drained agent keeps running and leaves the job queued")
    fleet_env.run("resume", name)
    fleet_env.assert_completed(queued)


def test_drain_of_a_busy_upstream_agent_lets_its_job_finish(fleet_env):
    """Upstream agents are drained through their server (state `offline`): the process
    is not touched and finishes its job."""
    pids, _ = _drain_mid_job(fleet_env)
    assert [p.pid for p in fleet_env.agent_processes("ud1")] == [pids["ud1"]]


def test_drained_upstream_agent_takes_no_new_job_after_its_job(fleet_env):
    pids, _ = _drain_mid_job(fleet_env)
    _stays_drained_until_resumed(fleet_env, "ud1", "qd", pids["ud1"])


def _held_by(fleet_env, name: str, queued: str, pid: int) -> Callable[[], bool]:
    """Drained on process `pid`: offline on the server, that one process, `queued` waiting."""

    def drained() -> bool:
        return (
            fleet_env.job_state(queued) == "waiting"
            and _server_state(fleet_env, name) == "offline"
            and [p.pid for p in fleet_env.agent_processes(name)] == [pid]
        )

    return drained


def _server_state(fleet_env, name: str) -> str | None:
    url = f"{fleet_env.server_url}/v1/agents/data/{name}"
    return requests.get(url, timeout=5).json().get("state")


def test_drain_of_an_upstream_agent_outlives_its_restarts_until_resumed(fleet_env):
    """Upstream's agent posts `waiting` whenever it starts. A drained one restarted after
    its job (restart --safe), again by hand, and replaced by a changed program, is held by
    its program's gate: the server keeps it `offline` and a queued job waits until
    `resume`, which lets the same process become the agent and run it."""
    fleet = fleet_env.upstream_fleet(["ug1"], {"ug1": ["qg"]})
    pids = fleet_env.start(fleet)
    job = fleet_env.hold_running("qg")
    fleet_env.run("drain", "ug1")
    with ProcessSampler(fleet_env) as sampler:
        fleet_env.run_releasing("restart", "--safe", "ug1", jobs=[job])
    fleet_env.assert_completed(job)
    sampler.assert_never_two()
    queued = fleet_env.submit("qg", 0)

    held = fleet_env.wait_all_running(["ug1"])["ug1"]
    assert held != pids["ug1"]
    fleet_env.wait_for(lambda: _server_state(fleet_env, "ug1") == "offline", 10, "offline")
    fleet_env.hold_for(
        1.5,
        _held_by(fleet_env, "ug1", queued, held),
        "the agent restarted after its job stays drained",
    )

    fleet_env.run("restart", "ug1")  # by hand: idle, so no --force needed
    again = fleet_env.wait_all_running(["ug1"])["ug1"]
    assert again != held
    fleet_env.hold_for(
        1.5, _held_by(fleet_env, "ug1", queued, again), "the agent restarted by hand stays drained"
    )
    assert "the agent waits until resumed" in fleet_env.log("ug1")
    row = fleet_env.status()["ug1"]
    assert (row["process"], row["state"], row["drain_flag"]) == ("RUNNING", "offline", "drain")
    assert row["unknown"] is None and row["job_id"] is None

    fleet["agents"]["ug1"]["environment"] = {"LAB_MARK": "green"}  # a new program entry
    assert "1 replace" in fleet_env.up(fleet).stdout
    swapped = fleet_env.wait_all_running(["ug1"])["ug1"]
    assert swapped != again
    fleet_env.hold_for(
        1.5,
        _held_by(fleet_env, "ug1", queued, swapped),
        "the agent of the new program stays drained",
    )

    fleet_env.run("resume", "ug1")
    fleet_env.assert_completed(queued)
    assert [p.pid for p in fleet_env.agent_processes("ug1")] == [swapped]  # the gate became it

    # Upstream's agent looks for no restart file: asking it that way is refused.
    refused = fleet_env.run("restart", "--safe", "ug1", "--method", "file", check=False)
    assert refused.returncode == 2
    assert "the restart file cannot restart ug1: upstream's agent honours only SIGUSR1" in (
        refused.stderr
    )
    assert [p.pid for p in fleet_env.agent_processes("ug1")] == [swapped]


def test_drained_idle_upstream_agent_takes_no_job_until_resumed(fleet_env):
    import requests

    pids = fleet_env.start(fleet_env.upstream_fleet(["ui1"], {"ui1": ["qi"]}))
    assert "1/1 idle." in fleet_env.run("drain", "ui1", "--wait", "--reason", "relabel").stdout
    shown = requests.get(f"{fleet_env.server_url}/v1/agents/data/ui1", timeout=10).json()
    assert (shown["state"], shown["comment"]) == ("offline", "drained by tf-fleet: relabel")
    _stays_drained_until_resumed(fleet_env, "ui1", "qi", pids["ui1"])
    assert fleet_env.status()["ui1"]["pid"] == pids["ui1"]


def test_changed_upstream_agent_keeps_its_job_until_it_ends(fleet_env):
    fleet = fleet_env.upstream_fleet(["ur1"], {"ur1": ["qr"]})
    old_pid = fleet_env.start(fleet)["ur1"]
    job = fleet_env.hold_running("qr")
    fleet["agents"]["ur1"]["environment"] = {"LAB_MARK": "blue"}
    fleet_env.write(fleet)
    with ProcessSampler(fleet_env) as sampler:
        out = fleet_env.run_releasing("up", jobs=[job], check=False)
        fleet_env.same_process_until_done("ur1", old_pid, job)
    assert "1 replace" in out.stdout
    fleet_env.assert_completed(job)
    sampler.assert_never_two()


# Three agents at once: each stop races supervisord's respawn of the agent that exited on
# SIGUSR1; tf-fleet stops it again until the swap holds.
def test_up_replaces_changed_upstream_agents(fleet_env):
    names = ["ur2", "ur3", "ur4"]
    fleet = fleet_env.upstream_fleet(names, {n: [f"q-{n}"] for n in names})
    old = fleet_env.start(fleet)
    for name in names:
        fleet["agents"][name]["environment"] = {"LAB_MARK": "blue"}
    out = fleet_env.up(fleet, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 replace" in out.stdout
    new = fleet_env.wait_all_running(names)
    assert all(new[n] != old[n] for n in names)
    queued = fleet_env.submit("q-ur2", 0, "echo mark=$LAB_MARK")
    fleet_env.assert_completed(queued)
    # The stub runs the job's commands with its own stdout: the agent's log.
    fleet_env.wait_for(lambda: "mark=blue" in fleet_env.log("ur2"), 10, "the new environment")


def test_removed_upstream_agent_keeps_its_job_until_it_ends(fleet_env):
    fleet = fleet_env.upstream_fleet(["uk1", "uk2"], {"uk1": ["qk1"], "uk2": ["qk2"]})
    pids = fleet_env.start(fleet)
    job = fleet_env.hold_running("qk2")
    del fleet["agents"]["uk2"]
    fleet_env.write(fleet)
    with ProcessSampler(fleet_env) as sampler:
        out = fleet_env.run_releasing("up", jobs=[job], check=False)
        fleet_env.same_process_until_done("uk2", pids["uk2"], job)
    assert "1 remove" in out.stdout
    fleet_env.assert_completed(job)
    sampler.assert_never_two()
    assert fleet_env.status()["uk1"]["pid"] == pids["uk1"]


def test_up_removes_dropped_upstream_agents(fleet_env):
    names = ["uk3", "uk4", "uk5", "uk6"]
    fleet = fleet_env.upstream_fleet(names, {n: [f"q-{n}"] for n in names})
    pids = fleet_env.start(fleet)
    for name in names[1:]:
        del fleet["agents"][name]
    out = fleet_env.up(fleet, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 remove" in out.stdout
    fleet_env.wait_for(
        lambda: all(not fleet_env.agent_processes(n) for n in names[1:]), what="them to stop"
    )
    assert set(fleet_env.status()) == {"uk3"}
    assert fleet_env.status()["uk3"]["pid"] == pids["uk3"]
    assert not any(
        (fleet_env.state_dir / f"supervisor/conf.d/{n}.conf").exists() for n in names[1:]
    )


def test_upstream_agent_counts_as_busy_while_its_server_cannot_say(fleet_env):
    """No child process proves nothing between phases: only the server knows whether an
    upstream agent holds a job, so with the server down the agent is not known to be idle
    (a hard restart is refused, `status` says why); once the server answers, it is idle."""
    pids = fleet_env.start(fleet_env.upstream_fleet(["uz1"], {"uz1": ["qz"]}))
    listed = fleet_env.ctl("status").stdout.splitlines()
    server = next(line.split()[0] for line in listed if line.startswith("tf-fleet-server"))
    fleet_env.ctl("stop", server, check=True)

    refused = fleet_env.run("restart", "uz1", check=False)
    assert refused.returncode != 0
    assert "uz1 is busy: not known to be idle (no child process;" in refused.stderr
    assert "is unreachable" in refused.stderr
    shown = fleet_env.run("status", check=False).stdout
    assert "uz1: counted as busy, its server cannot say whether it runs a job" in shown, shown
    assert [p.pid for p in fleet_env.agent_processes("uz1")] == [pids["uz1"]]

    fleet_env.ctl("start", server, check=True)
    # RUNNING after one startsecs is not listening yet on a slow host: wait until it answers
    fleet_env.wait_for(
        lambda: _answers(f"{fleet_env.server_url}/v1/agents/data/uz1"), what="the server to answer"
    )
    restarted = fleet_env.run("restart", "uz1")
    assert "uz1: restarted" in restarted.stdout
    assert [p.pid for p in fleet_env.agent_processes("uz1")] != [pids["uz1"]]


@pytest.fixture(scope="module")
def real_agent(upstream_bin: Path) -> str:
    """Upstream's real testflinger-agent (from the session's venv of upstream's packages)."""
    return str(upstream_bin / "testflinger-agent")


def test_real_upstream_agent_stays_drained_after_its_job_and_its_restarts(fleet_env, real_agent):
    """Upstream's own agent, drained mid-job: its job completes, it takes no new job after
    it, nor after a restart (where it posts `waiting`), until `resume`."""
    fleet = fleet_env.upstream_fleet(["ua1", "real1"], {"ua1": ["qa"], "real1": ["qreal"]})
    # The server first: upstream's agent waits 30 s before it looks again for one not up.
    alone = copy.deepcopy(fleet)
    del alone["agents"]["real1"]
    fleet_env.start(alone)
    fleet["agents"]["real1"].update(
        agent_command=real_agent, test_command=RUN_TEST_CMDS, polling_interval=1
    )
    fleet_env.up(fleet)
    fleet_env.wait_for(lambda: _server_state(fleet_env, "real1") == "waiting", 30, "real1 up")
    job = fleet_env.hold_running("qreal")
    pid = fleet_env.wait_all_running(["real1"])["real1"]
    fleet_env.run("drain", "real1")
    fleet_env.release(job)
    fleet_env.assert_completed(job)
    queued = fleet_env.submit("qreal", 0)

    fleet_env.hold_for(
        2.0,
        _held_by(fleet_env, "real1", queued, pid),
        "the drained agent takes no job after its own",
    )
    fleet_env.run("restart", "real1")
    again = fleet_env.wait_all_running(["real1"])["real1"]
    assert again != pid
    fleet_env.hold_for(
        2.0,
        _held_by(fleet_env, "real1", queued, again),
        "the drained agent takes no job after a restart",
    )
    fleet_env.run("resume", "real1")
    fleet_env.assert_completed(queued)
    assert [p.pid for p in fleet_env.agent_processes("real1")] == [again]


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).ok
    except requests.RequestException:
        return False
