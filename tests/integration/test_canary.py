"""Canary roll-outs: a change reaches N agents first and the rest only once they pass the
gate; a canary that fails it is rolled back; no job is interrupted either way."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.render import RenderContext


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
        "up",
        "--canary",
        "1",
        "--canary-job",
        _smoke(fleet_env),
        "--canary-soak",
        "1s",
        jobs=[job],
        when="cg3: waiting",
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


def _gauge(text: str, name: str, **labels: str) -> float:
    """The one sample of `name` with `labels` (among others) in `status --format
    prometheus`, as Prometheus' own parser reads it."""
    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    assert len(found) == 1, (name, labels, text)
    return found[0]


def _dying_build(env, seconds: int) -> str:
    """A tf-agent build that polls, then dies `seconds` later (SIGKILL): it passes the
    first poll, as a bad build does, and crash-loops under supervisord."""
    directory = env.root / "bad-build"
    directory.mkdir(exist_ok=True)
    script = directory / "tf-agent"  # its name makes it a tf-agent to tf-fleet
    boot = RenderContext(python="", program_dir=Path()).agent_script
    # exec keeps the shell's pid: the process supervisord runs is the agent itself
    killer = f"(sleep {seconds}; kill -KILL $$ 2>/dev/null) &"
    script.write_text(f'#!/bin/sh\n{killer}\nexec {sys.executable} -S {boot} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_a_build_that_dies_after_its_first_poll_fails_the_soak_and_is_remembered(fleet_env):
    names = ["cs1", "cs2"]
    fleet = fleet_env.agent_fleet(names, {n: [f"q-{n}"] for n in names})
    fleet["name"] = "soak-lab"
    before = fleet_env.start(fleet)
    job = fleet_env.hold_running("q-cs2")  # cs2 is busy: cs1 is the canary
    good = {n: _conf(fleet_env, n) for n in names}
    # dies 6 s after it starts: past its first poll even on a loaded host, within the soak
    fleet["defaults"]["agent_command"] = _dying_build(fleet_env, 6)
    up = fleet_env.up(fleet, "--canary", "1", "--canary-soak", "14s", check=False)
    assert up.returncode == 1, up.stdout + up.stderr
    assert "canary gate failed: cs1: " in up.stderr and "during the soak" in up.stderr, up.stderr
    assert fleet_env.pids()["cs2"] == before["cs2"]

    # The rejection is remembered: a plain `up` (a unit, a reboot) refuses it, touching nothing.
    again = fleet_env.run("up", check=False)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "the change was rejected at" in again.stderr and "cs1" in again.stderr, again.stderr
    assert "--force-rejected" in again.stderr
    assert fleet_env.pids()["cs2"] == before["cs2"]
    assert {n: _conf(fleet_env, n) for n in names} == good
    assert "rejected: the change was rejected" in fleet_env.run("plan").stdout
    assert "rejected: the change was rejected" in fleet_env.run("status", check=False).stdout
    gauges = fleet_env.run("status", "--format", "prometheus").stdout
    assert _gauge(gauges, "tf_fleet_change_rejected", fleet="soak-lab") == 1, gauges
    back = fleet_env.run("rollback").stdout
    assert back.startswith("nothing to roll back: the change was rejected at"), back
    assert "the fleet runs what it ran before that change" in back
    fleet_env.release(job)
    fleet_env.assert_completed(job)  # cs2 was never touched: its job ran to its end

    # Forced through, the build reaches every agent and crash-loops: status counts it.
    fleet_env.run("up", "--force-rejected", check=False)

    def crashing() -> bool:
        rows = fleet_env.status()
        return all(rows[n]["crashed"] for n in names)

    fleet_env.wait_for(crashing, timeout=60, what="both agents to crash and start again")
    seen = fleet_env.run("status", check=False)
    assert seen.returncode == 1 and "ended without exiting" in seen.stdout, seen.stdout
    gauges = fleet_env.run("status", "--format", "prometheus").stdout
    for name in names:
        assert _gauge(gauges, "tf_fleet_agent_failed", fleet="soak-lab", agent=name) == 1
    assert _gauge(gauges, "tf_fleet_change_rejected", fleet="soak-lab") == 0

    # A new change is a new change: the fixed fleet file goes out, and the record is gone.
    fleet["defaults"].pop("agent_command")
    fleet["defaults"]["location"] = "rack 5"
    fleet_env.up(fleet)
    assert all("rack 5" in _conf(fleet_env, n) for n in names)
    fleet_env.assert_completed(fleet_env.submit("q-cs1", 0.1))


def test_a_command_that_cannot_run_fails_the_soak_without_a_smoke_job(fleet_env):
    names = ["ct1", "ct2"]
    fleet = fleet_env.agent_fleet(names, {n: [f"q-{n}"] for n in names})
    before = fleet_env.start(fleet)
    good = {n: _conf(fleet_env, n) for n in names}
    fleet["defaults"]["test_command"] = "tf-local-conector test"  # a typo
    fleet_env.write(fleet)
    up = fleet_env.started("up", "--canary", "1", "--canary-soak", "60s")
    try:
        # ct1 (idle, first by name) is the canary: once back on the change, a job of the
        # lab's reaches it during the soak.
        fleet_env.wait_for(
            lambda: (
                "tf-local-conector" in _conf(fleet_env, "ct1")
                and fleet_env.status()["ct1"]["pid"] != before["ct1"]
            ),
            what="the canary back on the change",
        )
        job = fleet_env.submit("q-ct1", 0)
        out, err = up.communicate(timeout=90)
    finally:
        if up.poll() is None:
            up.kill()
            up.communicate()
    assert up.returncode == 1, out + err
    assert f"ct1: job {job} failed in its test phase with status 127" in err, err
    assert "command not found" in err and "rolled back ct1" in err
    assert fleet_env.result(job)["test_status"] == 127
    assert {n: _conf(fleet_env, n) for n in names} == good
    assert fleet_env.pids()["ct2"] == before["ct2"]
