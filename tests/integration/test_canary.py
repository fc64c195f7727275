"""Canary roll-outs: a change reaches N agents first and the rest only once they pass the
gate; a canary that fails it is rolled back; no job is interrupted either way."""

from __future__ import annotations

import yaml

from multiagent.fleet.model.layout import Layout


def _smoke(env) -> str:
    path = env.root / "smoke.yaml"
    path.write_text(yaml.safe_dump({"test_data": {"test_cmds": "echo smoke"}}))
    return str(path)


def _conf(env, name: str) -> str:
    return Layout(env.state_dir).agent_conf(name).read_text()


def test_a_good_change_goes_to_the_canary_first_then_to_all(fleet_env):
    names = ["cg1", "cg2", "cg3"]
    fleet = fleet_env.agent_fleet(names, {n: [f"q-{n}"] for n in names})
    before = fleet_env.start(fleet)
    job = fleet_env.hold_running("q-cg3")  # busy: not chosen as the canary
    fleet["defaults"]["location"] = "rack 9"
    fleet_env.write(fleet)
    plan = fleet_env.run("plan", "--canary", "1").stdout
    assert plan.count("[canary]") == 1 and "cg3" not in [
        line.split()[1] for line in plan.splitlines() if "[canary]" in line
    ], plan
    up = fleet_env.run_releasing(
        "up", "--canary", "1", "--canary-job", _smoke(fleet_env), jobs=[job], when="cg3: waiting"
    )
    assert "canaries passed: cg1; the rest followed" in up.stdout, up.stdout
    fleet_env.assert_completed(job)  # the busy agent finished its job first
    after = fleet_env.pids()
    assert all(after[n] != before[n] for n in names)
    assert all("rack 9" in _conf(fleet_env, n) for n in names)


def test_a_change_that_fails_its_jobs_stops_at_the_canary_and_is_rolled_back(fleet_env):
    names = ["cb1", "cb2"]
    fleet = fleet_env.agent_fleet(names, {n: [f"q-{n}"] for n in names})
    before = fleet_env.start(fleet)
    job = fleet_env.hold_running("q-cb2")
    old_confs = {n: _conf(fleet_env, n) for n in names}
    fleet["defaults"]["test_command"] = "false"
    up = fleet_env.up(fleet, "--canary", "1", "--canary-job", _smoke(fleet_env), check=False)
    assert up.returncode == 1, up.stdout + up.stderr
    assert "canary gate failed: cb1: canary job" in up.stderr and "failed" in up.stderr
    assert "rolled back cb1" in up.stderr
    fleet_env.release(job)
    fleet_env.assert_completed(job)  # cb2 was never touched: its job ran to its end
    after = fleet_env.pids()
    assert after["cb2"] == before["cb2"]
    assert {n: _conf(fleet_env, n) for n in names} == old_confs
    again = fleet_env.submit("q-cb1", 0.1)  # the rolled-back canary runs jobs as before
    fleet_env.assert_completed(again)


def test_an_agent_that_does_not_start_is_rolled_back_and_by_hand_too(fleet_env):
    names = ["cr1", "cr2"]
    fleet = fleet_env.agent_fleet(names, {n: [f"q-{n}"] for n in names})
    before = fleet_env.start(fleet)
    fleet["defaults"]["agent_command"] = "/bin/false"  # a new agent version that dies at once
    up = fleet_env.up(fleet, "--canary", "1", check=False)
    assert up.returncode == 1, up.stdout + up.stderr
    assert "canary gate failed: cr1: FAILED: did not come back" in up.stderr, up.stderr
    rows = fleet_env.status()
    assert rows["cr1"]["process"] == "RUNNING" and rows["cr2"]["pid"] == before["cr2"]
    fleet_env.assert_completed(fleet_env.submit("q-cr1", 0.1))
    # A good change, then `tf-fleet rollback` by hand puts both back.
    fleet["defaults"].pop("agent_command")
    fleet["defaults"]["location"] = "rack 7"
    fleet_env.up(fleet)
    assert all("rack 7" in _conf(fleet_env, n) for n in names)
    back = fleet_env.run("rollback")
    assert "2/2 rolled back." in back.stdout, back.stdout
    assert not any("rack 7" in _conf(fleet_env, n) for n in names)
    assert fleet_env.run("rollback").stdout.startswith("nothing to roll back")
