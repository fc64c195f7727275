"""`agent_tokens: true`: `tf-fleet up` gives every agent its own credential on the embedded
server, with no hand work, and the agents work with it."""

from __future__ import annotations

import json
import stat

import requests


def test_up_gives_every_agent_its_own_credential(fleet_env):
    names = ["cr1", "cr2"]
    fleet = fleet_env.agent_fleet(names, {"cr1": ["q1"], "cr2": ["q2"]})
    fleet["server"]["agent_tokens"] = True
    fleet_env.start(fleet)
    tokens = {}
    for name in names:
        path = fleet_env.state_dir / "agents" / name / "token.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        tokens[name] = json.loads(path.read_text())["refresh_token"]
        program = (fleet_env.state_dir / "supervisor" / "conf.d" / f"{name}.conf").read_text()
        assert f"--token-file {path}" in program
    assert tokens["cr1"] != tokens["cr2"]
    # Clients exist now: the server no longer lets anyone post an agent's data.
    anonymous = requests.post(
        f"{fleet_env.server_url}/v1/agents/data/cr1", json={"state": "offline"}, timeout=10
    )
    assert anonymous.status_code in (401, 403), anonymous.text
    # The agents' own requests are authenticated: they take and finish jobs.
    for queue in ("q1", "q2"):
        fleet_env.assert_completed(fleet_env.submit(queue, 0.1))
    # A second `up` keeps the valid credentials and touches no agent.
    pids = {n: r["pid"] for n, r in fleet_env.status().items()}
    again = fleet_env.run("up")
    assert "2 unchanged" in again.stdout or "3 unchanged" in again.stdout, again.stdout
    for name in names:
        path = fleet_env.state_dir / "agents" / name / "token.json"
        assert json.loads(path.read_text())["refresh_token"] == tokens[name]
    assert {n: r["pid"] for n, r in fleet_env.status().items()} == pids
