"""Rendering: golden program entries and agent configs, escaping, and the pure plan."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

from multiagent import plan as planning
from multiagent.fleet import parse_fleet
from multiagent.plan import Observed
from multiagent.render import RenderContext, render

GOLDEN = Path(__file__).parent / "golden"
FLEET = textwrap.dedent("""\
    server: {embedded: true, port: 8600}
    state_dir: /srv/tf
    restart: {restart_dir: /run/tf-restart}
    defaults:
      job_queues: [lab]
      polling_interval: 10
      test_command: "connector test -c {agent_dir}/default.yaml testflinger.json"
    agents:
      dut-1:
        location: "rack 3 %(here)s"
        environment: {PROXY: "http://p:3128/?a=1%", QUOTED: 'say "hi" now'}
        stopwaitsecs: 600
        device: {device_ip: 10.0.0.5}
      dut-2:
        agent_command: /opt/testflinger/bin/testflinger-agent
        user: lab
    """)


def rendered():
    fleet = parse_fleet(FLEET, Path("/srv/fleet.yaml"))
    ctx = RenderContext(
        python="/opt/venv/bin/python", program_dir=Path("/srv/tf/supervisor/conf.d")
    )
    return fleet, render(fleet, ctx)


@pytest.mark.parametrize("name", ["dut-1", "dut-2", "tf-fleet-server"])
def test_program_entry_matches_golden(name):
    _, rendering = rendered()
    text = rendering.programs[name].program_text
    golden = GOLDEN / f"{name}.conf"
    if os.environ.get("TF_FLEET_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text()


def test_supervisord_conf_matches_golden():
    _, rendering = rendered()
    path, text = rendering.supervisord_conf
    assert path == Path("/srv/tf/supervisor/supervisord.conf")
    golden = GOLDEN / "supervisord.conf"
    if os.environ.get("TF_FLEET_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text()


def test_agent_conf_holds_only_upstream_keys():
    _, rendering = rendered()
    files = rendering.programs["dut-1"].config_files
    conf = yaml.safe_load(files[Path("/srv/tf/agents/dut-1/testflinger-agent.conf")])
    assert conf["agent_id"] == "dut-1"
    assert conf["server_address"] == "http://127.0.0.1:8600"
    assert conf["location"] == "rack 3 %(here)s"  # not a supervisord file: no escaping
    assert conf["test_command"] == (
        "connector test -c /srv/tf/agents/dut-1/default.yaml testflinger.json"
    )
    for fleet_only in ("environment", "stopwaitsecs", "device", "user", "agent_command"):
        assert fleet_only not in conf
    device = yaml.safe_load(files[Path("/srv/tf/agents/dut-1/default.yaml")])
    assert device == {"device_ip": "10.0.0.5"}
    assert Path("/srv/tf/agents/dut-2/default.yaml") not in rendering.programs["dut-2"].files


def test_percent_is_escaped_in_every_supervisord_value():
    _, rendering = rendered()
    text = rendering.programs["dut-1"].program_text
    assert 'PROXY="http://p:3128/?a=1%%"' in text
    assert "QUOTED='say \"hi\" now'" in text
    from supervisor.datatypes import dict_of_key_value_pairs

    env_line = next(line for line in text.splitlines() if line.startswith("environment="))
    parsed = dict_of_key_value_pairs(env_line[len("environment=") :].replace("%%", "%"))
    assert parsed["PROXY"] == "http://p:3128/?a=1%"
    assert parsed["QUOTED"] == 'say "hi" now'


def test_rendering_is_deterministic():
    assert rendered()[1] == rendered()[1]


def observed_for(rendering, **overrides) -> Observed:
    disk = dict(rendering.all_files())
    loaded = {name: "RUNNING" for name in rendering.programs}
    base = dict(
        disk=disk,
        managed=frozenset(loaded),
        loaded=loaded,
        started={n: 1000.0 for n in loaded},
        modified={p: 900.0 for p in disk},
    )
    base.update(overrides)
    return Observed(**base)


def test_plan_unchanged_when_everything_matches():
    _, rendering = rendered()
    result = planning.make_plan(rendering.programs, observed_for(rendering))
    assert result.is_noop
    assert {a.kind for a in result.actions} == {planning.UNCHANGED}


def test_plan_kinds():
    _, rendering = rendered()
    programs = rendering.programs
    disk = dict(rendering.all_files())
    conf1 = Path("/srv/tf/agents/dut-1/testflinger-agent.conf")
    disk[conf1] = "old"
    disk[programs["dut-2"].program_path] = "old program"
    loaded = {"dut-1": "RUNNING", "dut-2": "RUNNING", "gone": "RUNNING"}
    observed = observed_for(rendering, disk=disk, loaded=loaded, managed=frozenset(loaded))
    kinds = {a.name: a.kind for a in planning.make_plan(programs, observed).actions}
    assert kinds == {
        "dut-1": "restart",
        "dut-2": "replace",
        "gone": "remove",
        "tf-fleet-server": "add",
    }


def test_plan_sees_a_config_written_after_the_process_started():
    _, rendering = rendered()
    conf1 = Path("/srv/tf/agents/dut-1/testflinger-agent.conf")
    modified = {p: 900.0 for p in rendering.all_files()}
    modified[conf1] = 1001.0
    actions = planning.make_plan(rendering.programs, observed_for(rendering, modified=modified))
    assert {a.name: a.kind for a in actions.actions}["dut-1"] == planning.RESTART


def test_plan_starts_stopped_agents_unless_held():
    _, rendering = rendered()
    loaded = {n: "RUNNING" for n in rendering.programs}
    loaded.update({"dut-1": "FATAL", "dut-2": "STOPPED"})
    observed = observed_for(rendering, loaded=loaded, held=frozenset({"dut-2"}))
    kinds = {a.name: a.kind for a in planning.make_plan(rendering.programs, observed).actions}
    assert kinds["dut-1"] == planning.START
    assert kinds["dut-2"] == planning.UNCHANGED
