"""Rendering: golden program entries and agent configs, escaping, and the pure plan."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from multiagent.fleet.model import plan as planning
from multiagent.fleet.model.fleetfile import parse_fleet
from multiagent.fleet.model.plan import Observed
from multiagent.fleet.model.render import RenderContext, render

# tf-agent as installed in a venv (RenderContext.agent_script)
BOOT = "/opt/venv/lib/python3/site-packages/multiagent/agent/boot.py"
GATE = "/opt/venv/lib/python3/site-packages/multiagent/fleet/host/gate.py"

GOLDEN = Path(__file__).parents[1] / "golden"
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


def rendered(text: str = FLEET):
    fleet = parse_fleet(text, Path("/srv/fleet.yaml"))
    ctx = RenderContext(
        python="/opt/venv/bin/python",
        program_dir=Path("/srv/tf/supervisor/conf.d"),
        agent_script=BOOT,
        gate_script=GATE,
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


def _parsed_by_supervisord(tmp_path: Path, files: dict[str, str]) -> tuple[Path, dict[str, Any]]:
    """Lay `files` (supervisord.conf and program entries, as rendered for /srv/tf) out under
    tmp_path and let supervisord's own parser read supervisord.conf with its [include];
    returns {program name: supervisor.options.ProcessConfig}.

    Only the state dir is moved (/srv/tf -> tmp_path) and dut-2's `user=lab` becomes this
    user's name: supervisord resolves the user while parsing and there is no `lab` here."""
    from supervisor.options import ServerOptions

    root = tmp_path / "srv-tf"
    for sub in ("supervisor/conf.d", "logs", "agents/dut-1", "agents/dut-2"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        text = text.replace("/srv/tf", str(root)).replace(
            "user=lab\n", f"user={getpass.getuser()}\n"
        )
        target = (
            root
            / "supervisor"
            / ("supervisord.conf" if name == "supervisord.conf" else f"conf.d/{name}")
        )
        target.write_text(text)
    options = ServerOptions()
    options.configfile = str(root / "supervisor/supervisord.conf")
    options.process_config(do_usage=False)
    assert options.logfile == str(root / "supervisor/supervisord.log")
    assert options.pidfile == str(root / "supervisor/supervisord.pid")
    assert options.identifier == "tf-fleet"
    assert options.configroot.supervisord.server_configs[0]["file"] == str(root / "supervisor.sock")
    assert options.configroot.supervisord.server_configs[0]["chmod"] == 0o700
    groups = {g.name: g for g in options.process_group_configs}
    assert all(len(g.process_configs) == 1 for g in groups.values())  # no [group:]
    return root, {name: g.process_configs[0] for name, g in groups.items()}


def _golden_files() -> dict[str, str]:
    return {p.name: p.read_text() for p in GOLDEN.iterdir()}


def _check_programs_as_supervisord_reads_them(root: Path, programs: dict) -> None:
    from supervisor.datatypes import RestartWhenExitUnexpected

    assert set(programs) == {"dut-1", "dut-2", "tf-fleet-server"}
    for name, conf in programs.items():
        assert conf.autostart is True
        assert conf.autorestart is RestartWhenExitUnexpected, name
        assert conf.exitcodes == [0], name
        assert conf.startsecs > 0, name
        assert conf.stopasgroup is True and conf.killasgroup is True, name
        assert conf.redirect_stderr is True, name
        assert conf.stdout_logfile == str(root / f"logs/{name}.log"), name
        assert conf.stdout_logfile_maxbytes == 10 * 1024 * 1024, name
        assert conf.stdout_logfile_backups == 5, name
    dut1, dut2, server = programs["dut-1"], programs["dut-2"], programs["tf-fleet-server"]
    assert dut1.command == (
        f"/opt/venv/bin/python -S {BOOT} -c {root}/agents/dut-1/testflinger-agent.conf"
        f" --run-dir {root}/run/dut-1 --restart-dir /run/tf-restart"
    )
    assert dut1.directory == str(root / "agents/dut-1")
    assert (dut1.startsecs, dut1.stopwaitsecs) == (2, 600)
    # `%%` comes back as `%`, quotes as written
    assert dut1.environment["PROXY"] == "http://p:3128/?a=1%"
    assert dut1.environment["QUOTED"] == 'say "hi" now'
    assert dut1.uid is None
    for agent in (dut1, dut2):  # the agent's own venv first: tf-local-connector and friends
        assert agent.environment["PATH"].startswith("/opt/venv/bin:"), agent.name
    # Upstream's agent goes through the gate that holds it while drained.
    assert dut2.command == (
        f"/opt/venv/bin/python -S {GATE} --drain-file {root}/run/dut-2/"
        "dut-2.drain -- /opt/testflinger/bin/testflinger-agent -c "
        f"{root}/agents/dut-2/testflinger-agent.conf"
    )
    assert dut2.stopwaitsecs == 30 and dut2.uid == os.getuid()
    assert set(dut2.environment) == {"PATH"}
    assert server.command == (
        f"/opt/venv/bin/python -m multiagent.server --host 127.0.0.1 --port 8600"
        f" --db {root}/server/testflinger.db"
    )
    assert server.priority < dut1.priority  # the server starts before the agents
    assert not server.environment


def test_golden_files_as_supervisord_reads_them(tmp_path):
    root, programs = _parsed_by_supervisord(tmp_path, _golden_files())
    _check_programs_as_supervisord_reads_them(root, programs)


def test_rendered_files_as_supervisord_reads_them(tmp_path):
    """The same checks on the renderer's output itself (not only on the golden files)."""
    _, rendering = rendered()
    files = {p.program_path.name: p.program_text for p in rendering.programs.values()}
    files["supervisord.conf"] = rendering.supervisord_conf[1]
    root, programs = _parsed_by_supervisord(tmp_path, files)
    _check_programs_as_supervisord_reads_them(root, programs)


def test_every_rendered_agent_file_loads_with_safe_load():
    """What upstream's agent does with its config (yaml.safe_load): every agent config and
    device config is a mapping, with the keys upstream requires."""
    _, rendering = rendered()
    for name, program in rendering.programs.items():
        for path, text in program.config_files.items():
            data = yaml.safe_load(text)
            assert isinstance(data, dict), path
            if path.name == "testflinger-agent.conf":
                assert data["agent_id"] == name
                assert data["job_queues"] == ["lab"]
                assert data["polling_interval"] == 10


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


def _reversed_mappings(value):
    """The same YAML data with every mapping's keys in the opposite order."""
    if isinstance(value, dict):
        return {k: _reversed_mappings(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_mappings(v) for v in value]
    return value


def _both_orders():
    shuffled = yaml.safe_dump(_reversed_mappings(yaml.safe_load(FLEET)), sort_keys=False)
    assert shuffled.splitlines()[0].startswith("agents:")  # really reordered
    _, first = rendered()
    _, second = rendered(shuffled)
    return (
        {str(p): t for p, t in first.all_files().items()},
        {str(p): t for p, t in second.all_files().items()},
    )


def test_supervisord_files_do_not_depend_on_key_order():
    """The same fleet written with every mapping (agents, defaults, environment, device)
    in the opposite order renders the same supervisord files and device configs, byte for
    byte."""
    first, second = _both_orders()
    assert first.keys() == second.keys()
    for path in first:
        if not path.endswith("/testflinger-agent.conf"):
            assert second[path] == first[path], path


def test_agent_configs_do_not_depend_on_key_order():
    first, second = _both_orders()
    for path in first:
        assert second[path] == first[path], path


RENDER_IN_A_FRESH_INTERPRETER = """
import json, sys
from pathlib import Path
from multiagent.fleet.model.fleetfile import parse_fleet
from multiagent.fleet.model.render import RenderContext, render
fleet = parse_fleet(sys.stdin.read(), Path("/srv/fleet.yaml"))
ctx = RenderContext(
    python="/opt/venv/bin/python",
    program_dir=Path("/srv/tf/supervisor/conf.d"),
    agent_script="/opt/venv/lib/python3/site-packages/multiagent/agent/boot.py",
    gate_script="/opt/venv/lib/python3/site-packages/multiagent/fleet/host/gate.py",
)
rendering = render(fleet, ctx)
files = {str(p): t for p, t in rendering.all_files().items()}
files["supervisord.conf"] = rendering.supervisord_conf[1]
print(json.dumps(files))
"""


def test_rendering_is_the_same_in_interpreters_with_different_hash_seeds():
    """Two fresh processes with different PYTHONHASHSEED (set and dict-of-set iteration
    order differ between them) render the same bytes as this one."""
    _, here = rendered()
    expected = {str(p): t for p, t in here.all_files().items()}
    expected["supervisord.conf"] = here.supervisord_conf[1]
    for seed in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-c", RENDER_IN_A_FRESH_INTERPRETER],
            input=FLEET,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        )
        assert json.loads(proc.stdout) == expected


def observed_for(rendering, **overrides) -> Observed:
    disk = dict(rendering.all_files())
    loaded = {name: "RUNNING" for name in rendering.programs}
    base: dict[str, Any] = dict(
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


def test_plan_starts_stopped_agents_held_too_when_no_change_is_pending():
    _, rendering = rendered()
    loaded = {n: "RUNNING" for n in rendering.programs}
    loaded.update({"dut-1": "FATAL", "dut-2": "EXITED"})
    observed = observed_for(rendering, loaded=loaded, held=frozenset({"dut-2"}))
    actions = {a.name: a for a in planning.make_plan(rendering.programs, observed).actions}
    assert actions["dut-1"].kind == planning.START
    assert actions["dut-1"].reasons == ("process is FATAL",)
    assert actions["dut-2"].kind == planning.START
    assert actions["dut-2"].reasons == ("held down (EXITED), no change pending",)
    # with its change still to swap in, it is replaced instead
    disk = {**rendering.all_files(), rendering.programs["dut-2"].program_path: "old"}
    observed = observed_for(rendering, loaded=loaded, held=frozenset({"dut-2"}), disk=disk)
    kinds = {a.name: a.kind for a in planning.make_plan(rendering.programs, observed).actions}
    assert kinds["dut-2"] == planning.REPLACE
