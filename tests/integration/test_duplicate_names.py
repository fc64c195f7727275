"""An agent name that another host already runs against the same server: `plan` and `up`
warn, and with `duplicate_names: refuse` `up` refuses before writing anything."""

from __future__ import annotations

import requests


def test_an_agent_name_another_host_runs_is_warned_of_and_refused_on_request(fleet_env, tf_server):
    # Another host's agent of the same name has just posted to the shared server.
    posted = requests.post(
        f"{tf_server.url}/v1/agents/data/dup-1",
        json={"state": "waiting", "location": "rack 9"},
        timeout=10,
    )
    posted.raise_for_status()
    fleet = fleet_env.agent_fleet(["dup-1", "solo-1"])
    fleet["server"] = tf_server.url
    fleet_env.write(fleet)
    plan = fleet_env.run("plan")
    assert "warning: agent 'dup-1': " in plan.stderr, plan.stderr
    assert "location rack 9" in plan.stderr and "another host may run" in plan.stderr
    assert "solo-1" not in plan.stderr

    fleet["duplicate_names"] = "refuse"
    refused = fleet_env.up(fleet, check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "error: agent 'dup-1': " in refused.stderr and "nothing was written" in refused.stderr
    # Only the lock every changing command takes: no file, no supervisord, no agent.
    left = [p.name for p in fleet_env.state_dir.rglob("*")]
    assert left == ["tf-fleet.lock"], left

    # Warned of (the default), `up` goes on; once this fleet's dup-1 runs, it is not
    # another host's any more.
    del fleet["duplicate_names"]
    up = fleet_env.up(fleet)
    assert "warning: agent 'dup-1': " in up.stderr, up.stderr
    fleet_env.wait_all_running()
    assert "warning" not in fleet_env.run("plan").stderr
