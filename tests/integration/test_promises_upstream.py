"""README: "An upstream agent knows no drain flag: it gets SIGUSR1 and its respawned process
is stopped before its first poll." Drain, replace and remove of upstream-like agents
(tests/upstream_like_agent.py), each with a job in flight: the job completes, none is
interrupted, and never two processes hold a name."""

from __future__ import annotations

import pytest
from fixtures_fleet import ProcessSampler


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


@pytest.mark.xfail(
    strict=True,
    reason="drain of a busy upstream agent only sets its server state `offline`; the agent "
    "posts state `waiting` when its job ends (as upstream testflinger-agent does), which "
    "overwrites `offline`, and it takes the next queued job although drained",
)
def test_drained_upstream_agent_takes_no_new_job_after_its_job(fleet_env):
    pids, _ = _drain_mid_job(fleet_env)
    _stays_drained_until_resumed(fleet_env, "ud1", "qd", pids["ud1"])


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
