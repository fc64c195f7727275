"""--json on the commands a program drives (Ansible's module among them)."""

from __future__ import annotations

import json


def test_drain_resume_status_and_down_speak_json(fleet_env):
    fleet_env.start(fleet_env.agent_fleet(["js1", "js2"]))
    drained = json.loads(fleet_env.run("drain", "js1", "--json").stdout)
    assert [a["name"] for a in drained["agents"]] == ["js1"]
    status = json.loads(fleet_env.run("status", "--json").stdout)
    assert status["supervisord_running"] is True
    assert {a["name"]: a["drain_flag"] for a in status["agents"]} == {"js1": "drain", "js2": None}
    resumed = json.loads(fleet_env.run("resume", "--all", "--json").stdout)
    assert resumed == {
        "agents": [{"name": "js1", "started": False}, {"name": "js2", "started": False}]
    }
    down = json.loads(fleet_env.run("down", "--json").stdout)
    assert down == {
        "stopped": ["js1", "js2", "tf-fleet-server"],
        "stopped_supervisord": True,
        "interrupted": [],  # no job ran
    }
    again = json.loads(fleet_env.run("down", "--json").stdout)
    assert again == {"stopped": [], "stopped_supervisord": False, "interrupted": []}
