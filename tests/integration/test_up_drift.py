"""A no-change `up` reuses the files on disk as the rendering (supervisor/rendered.json):
every drift must still be noticed and acted on as when it rendered every time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from fixtures_fleet import SLEEPER

import multiagent
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.templating import template_dir

NAMES = ("d-1", "d-2", "d-3")


def _fleet() -> dict:
    return {
        "server": "http://127.0.0.1:9",
        "defaults": {"agent_command": SLEEPER, "startsecs": 1},
        "agents": {name: {"job_queues": ["q"]} for name in NAMES},
    }


def _settled(fleet_env) -> dict[str, int]:
    """Up twice: the second reuses the record the first wrote, and touches nothing."""
    fleet_env.up(_fleet())
    record = fleet_env.state_dir / "supervisor/rendered.json"
    assert record.is_file() and record.stat().st_mode & 0o777 == 0o600
    assert fleet_env.run("up").stdout.strip() == "3 unchanged"
    return fleet_env.pids()


def _running_pids(fleet_env) -> dict[str, int]:
    """Each agent's pid, once every agent has one."""
    pids: dict[str, int] = fleet_env.wait_for(
        lambda: (rows := fleet_env.pids()) and all(rows.values()) and rows, what="pids"
    )
    return pids


def _program(fleet_env, name: str) -> Path:
    return Layout(fleet_env.state_dir).private_program_dir / f"{name}.conf"


def _only_changed(fleet_env, before: dict[str, int], name: str) -> None:
    after = _running_pids(fleet_env)
    assert after[name] != before[name]
    assert {n: after[n] for n in NAMES if n != name} == {n: before[n] for n in NAMES if n != name}


def _up_repairs(fleet_env, name: str, path: Path, spoil, planned: str, done: str) -> None:
    """A settled fleet; `spoil(path)` changes a file tf-fleet wrote for agent `name` by hand:
    `plan` shows `planned`, `up` prints `done`, writes the file again as it was and
    replaces that agent's process only."""
    pids = _settled(fleet_env)
    text = path.read_text()
    spoil(path)
    assert planned in fleet_env.run("plan").stdout
    assert done in fleet_env.run("up").stdout
    assert path.read_text() == text
    _only_changed(fleet_env, pids, name)


def test_a_program_file_edited_by_hand_is_rewritten_and_its_agent_replaced(fleet_env):
    program = _program(fleet_env, "d-2")
    _up_repairs(
        fleet_env,
        "d-2",
        program,
        lambda path: path.write_text(path.read_text().replace("startsecs=1", "startsecs=5")),
        "replace    d-2  (program entry changed)",
        "1 replace, 2 unchanged",
    )
    assert fleet_env.run("up").stdout.strip() == "3 unchanged"


def test_a_program_file_removed_by_hand_is_written_again(fleet_env):
    program = _program(fleet_env, "d-3")
    _up_repairs(fleet_env, "d-3", program, Path.unlink, "replace    d-3", "1 replace, 2 unchanged")
    assert fleet_env.run("up").stdout.strip() == "3 unchanged"


def test_an_agent_config_edited_by_hand_restarts_only_that_agent(fleet_env):
    conf = Layout(fleet_env.state_dir).agent_conf("d-1")
    _up_repairs(
        fleet_env,
        "d-1",
        conf,
        lambda path: path.write_text(path.read_text() + "# edited by hand\n"),
        "restart    d-1  (testflinger-agent.conf changed)",
        "1 restart, 2 unchanged",
    )


def test_an_agent_config_rewritten_with_the_same_text_after_start_restarts_it(fleet_env):
    pids = _settled(fleet_env)
    conf = Layout(fleet_env.state_dir).agent_conf("d-2")
    time.sleep(1.1)  # past supervisord's whole-second start stamp of the process
    conf.write_text(conf.read_text())
    reason = "testflinger-agent.conf changed after the process started"
    assert f"restart    d-2  ({reason})" in fleet_env.run("plan").stdout
    assert "1 restart, 2 unchanged" in fleet_env.run("up").stdout
    _only_changed(fleet_env, pids, "d-2")


def test_a_program_missing_from_supervisord_is_added_again(fleet_env):
    pids = _settled(fleet_env)
    fleet_env.ctl("stop", "d-1", check=True)
    fleet_env.ctl("remove", "d-1", check=True)
    assert "add        d-1  (not loaded)" in fleet_env.run("plan").stdout
    out = fleet_env.run("up").stdout
    assert "started d-1" in out and "running: 1 of 1 started program" in out
    _only_changed(fleet_env, pids, "d-1")
    assert fleet_env.run("up").stdout.strip() == "3 unchanged"


def test_a_changed_fleet_file_renders_again(fleet_env):
    pids = _settled(fleet_env)
    fleet = _fleet()
    fleet["agents"]["d-3"]["environment"] = {"LAB": "x"}
    assert "1 replace, 2 unchanged" in fleet_env.up(fleet).stdout
    assert 'LAB="x"' in _program(fleet_env, "d-3").read_text()
    _only_changed(fleet_env, pids, "d-3")


def test_a_template_changed_by_an_upgrade_replaces_every_agent(fleet_env, tmp_path):
    """An upgraded tf-fleet (here a copy of this one whose program template adds a line)
    with the same fleet file: the record of the older one must not be reused."""
    pids = _settled(fleet_env)
    upgraded = tmp_path / "upgraded"
    package = Path(multiagent.__file__).resolve().parent
    shutil.copytree(package, upgraded / "multiagent", ignore=shutil.ignore_patterns("__pycache__"))
    templates = template_dir()
    if templates.parent != package:  # a source checkout: templates/ beside the package
        shutil.copytree(templates, upgraded / "templates")
    template = upgraded / templates.relative_to(package.parent) / "program.conf.j2"
    template.write_text(template.read_text() + "; written by a newer tf-fleet\n")

    def run_upgraded(*args: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(upgraded)}
        proc = subprocess.run(
            fleet_env.command(*args),
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=fleet_env.root,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    assert run_upgraded("plan").split().count("replace") == 3
    assert "3 replace" in run_upgraded("up")
    assert _program(fleet_env, "d-1").read_text().endswith("; written by a newer tf-fleet\n")
    after = _running_pids(fleet_env)
    assert not set(after.values()) & set(pids.values())
    assert run_upgraded("up").strip() == "3 unchanged"
    key = json.loads((fleet_env.state_dir / "supervisor/rendered.json").read_text())["key"]
    # and back on this version, the same: its record was replaced, not reused
    assert "3 replace" in fleet_env.run("up").stdout
    assert json.loads((fleet_env.state_dir / "supervisor/rendered.json").read_text())["key"] != key
