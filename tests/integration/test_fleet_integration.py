"""`up`, `status`, `plan`, `down` against a real supervisord, private and system mode."""

from __future__ import annotations

import psutil
from fixtures_fleet import SLEEPER


def three_agents(extra: dict | None = None, server: str = "http://127.0.0.1:9") -> dict:
    """Upstream-style stand-ins; `server` (by default none answers, which makes them busy:
    nothing proves an upstream agent idle when its server cannot say)."""
    agents = {f"agent-0{i}": {"job_queues": ["q"]} for i in range(1, 4)}
    agents.update(extra or {})
    return {
        "server": server,
        "defaults": {"agent_command": SLEEPER, "startsecs": 1},  # RUNNING 1 s after start
        "agents": agents,
    }


def test_up_starts_every_agent_and_second_up_touches_nothing(fleet_env):
    first = fleet_env.up(three_agents())
    assert "3 add" in first.stdout
    status = fleet_env.status()
    assert {n: s["process"] for n, s in status.items()} == {
        "agent-01": "RUNNING",
        "agent-02": "RUNNING",
        "agent-03": "RUNNING",
    }
    pids = {n: s["pid"] for n, s in status.items()}
    files = [
        p for p in fleet_env.state_dir.rglob("*") if p.is_file() and p.suffix in (".conf", ".yaml")
    ]
    mtimes = {p: p.stat().st_mtime_ns for p in files}

    second = fleet_env.run("up")
    assert "wrote" not in second.stdout
    assert second.stdout.strip() == "3 unchanged"
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert fleet_env.pids() == pids
    plan = fleet_env.run("plan")
    assert plan.stdout.split() == [
        "unchanged",
        "agent-01",
        "unchanged",
        "agent-02",
        "unchanged",
        "agent-03",
    ]


def test_a_look_at_a_few_agents_asks_supervisord_for_them_only(fleet_env):
    """What a safe operation on a few agents reads each tick: the same facts as from every
    process's info, and a name supervisord does not know is left out, not an error."""
    from multiagent.fleet.model.fleetfile import load_fleet
    from multiagent.fleet.supervisord.client import Supervisor, target_for

    fleet_env.up(three_agents())
    supervisor = Supervisor(target_for(load_fleet(fleet_env.fleet_file)))
    every = supervisor.processes()
    few = supervisor.processes_named(["agent-03", "agent-09", "agent-01"])

    def facts(infos):  # not `now` and the uptime in `description`: a second may pass
        return {n: (i.state, i.pid, i.start, i.log_file) for n, i in infos.items()}

    assert facts(few) == facts({name: every[name] for name in ("agent-01", "agent-03")})
    assert few["agent-01"].state == "RUNNING" and few["agent-01"].pid


def test_adding_an_agent_starts_only_it(fleet_env):
    fleet_env.up(three_agents())
    pids = fleet_env.pids()
    fleet_env.write(three_agents({"agent-04": {"job_queues": ["q"]}}))
    assert fleet_env.run("plan").stdout.splitlines()[-1].split()[:2] == ["add", "agent-04"]
    out = fleet_env.run("up").stdout
    assert "started agent-04" in out and "running: 1 of 1 started program" in out
    status = fleet_env.status()
    assert status["agent-04"]["process"] == "RUNNING"
    assert {n: status[n]["pid"] for n in pids} == pids


def test_changed_agent_is_restarted_and_the_others_are_not(fleet_env):
    fleet_env.up(three_agents())
    pids = fleet_env.pids()
    fleet_env.write(three_agents({"agent-02": {"job_queues": ["other"]}}))
    assert "restart    agent-02" in fleet_env.run("plan").stdout
    out = fleet_env.run("up").stdout
    assert "1 restart, 2 unchanged" in out
    status = fleet_env.status()
    assert status["agent-02"]["process"] == "RUNNING"
    assert status["agent-02"]["pid"] != pids["agent-02"]
    assert {n: status[n]["pid"] for n in ("agent-01", "agent-03")} == {
        n: pids[n] for n in ("agent-01", "agent-03")
    }
    assert fleet_env.run("up").stdout.strip() == "3 unchanged"


def test_agent_that_fails_at_once_ends_fatal_and_status_says_why(fleet_env):
    # A shell, not a Python: it must end within startsecs however loaded the host (an
    # interpreter that took over a second to start counted as started, then crashed).
    failing = "sh -c 'echo cannot open /dev/ttyUSB9 >&2; exit 1'"
    fleet_env.write(
        three_agents({"agent-03": {"job_queues": ["q"], "agent_command": failing, "startsecs": 1}})
    )
    up = fleet_env.run("up", check=False)
    assert up.returncode == 1
    assert "started agent-03\n" in up.stdout
    assert "failed to start: agent-03 (FATAL)" in up.stderr
    status = fleet_env.run("status", check=False)
    assert status.returncode == 1
    assert "FATAL" in status.stdout
    assert "cannot open /dev/ttyUSB9" in status.stdout  # the last lines of its log
    assert fleet_env.status()["agent-01"]["process"] == "RUNNING"


def test_down_leaves_no_process_behind(fleet_env, tf_server):
    fleet_env.up(three_agents(server=tf_server.url))  # it answers: they hold no job
    pids = [p.pid for p in fleet_env.processes()]
    assert len(pids) == 4  # supervisord and three agents
    out = fleet_env.run("down").stdout
    assert "stopped 3 programs" in out
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_status_json_and_logs_of_real_agents(fleet_env):
    fleet_env.up(fleet_env.agent_fleet(["l1", "l2"]))
    fleet_env.wait_for(
        lambda: all(s["last_poll"] for s in fleet_env.status().values()), what="both agents to poll"
    )
    row = fleet_env.status()["l1"]
    assert set(row) >= {
        "name",
        "process",
        "pid",
        "uptime_s",
        "state",
        "job_id",
        "phase",
        "restart_pending",
        "last_poll",
    }
    assert row["state"] == "waiting" and row["job_id"] is None and row["pid"] > 0
    assert row["restart_pending"] is False
    fleet_env.wait_for(
        lambda: fleet_env.status()["l2"]["process"] == "RUNNING", what="l2 past startsecs"
    )
    lines = fleet_env.run("status", "l2").stdout.splitlines()
    assert lines[0].startswith(f"server {fleet_env.server_url}: reachable"), lines
    assert "tf-fleet-server RUNNING" in lines[0]
    assert lines[1].split()[:2] == ["NAME", "PROCESS"]
    assert lines[2].split()[:2] == ["l2", "RUNNING"]
    logs = fleet_env.run("logs", "l1", "-n", "3").stdout.splitlines()
    assert 0 < len(logs) <= 3
    missing = fleet_env.run("logs", "nope", check=False)
    assert missing.returncode == 2
    assert f"unknown agent 'nope' (fleet file {fleet_env.fleet_file}; agents: l1, l2)" in (
        missing.stderr
    )
    unknown = fleet_env.run("status", "nope", check=False)
    assert unknown.returncode == 2


def test_answers_asked_ahead_are_taken_once_and_dropped_by_a_change(fleet_env):
    """`status` and `up` ask supervisord in a thread while they read their own files:
    the answer is what supervisord says, is used once, and a call that may change
    supervisord's state makes later looks ask again (no stale answer)."""
    from multiagent.fleet.model.facts import ProcessState
    from multiagent.fleet.model.fleetfile import load_fleet
    from multiagent.fleet.supervisord.client import Supervisor, target_for

    fleet_env.up(three_agents())
    fleet_env.wait_all_running()
    target = target_for(load_fleet(fleet_env.fleet_file))
    live = Supervisor(target).processes()

    ahead = Supervisor(target)
    ahead.ask_ahead()
    assert ahead.is_running()
    assert {n: p.pid for n, p in ahead.processes().items()} == {n: p.pid for n, p in live.items()}

    ahead.ask_ahead()
    ahead.stop("agent-01")  # drops what was asked ahead
    assert ahead.processes()["agent-01"].state == ProcessState.STOPPED
    assert fleet_env.status()["agent-01"]["process"] == "STOPPED"


def test_the_private_supervisord_answers_every_process_as_json_and_plain(fleet_env, monkeypatch):
    """The private supervisord loads tf-fleet's plugin: its JSON answer is
    getAllProcessInfo's, and a supervisord without it (an older tf-fleet's) still
    answers through getAllProcessInfo."""
    from multiagent.fleet.model.fleetfile import load_fleet
    from multiagent.fleet.supervisord import plugin
    from multiagent.fleet.supervisord.client import Supervisor, target_for

    fleet_env.up(three_agents())
    fleet_env.wait_all_running()
    target = target_for(load_fleet(fleet_env.fleet_file))
    plain = Supervisor(target)
    methods = plain._call("system.listMethods")
    assert isinstance(methods, list) and plugin.ALL_PROCESS_INFO in methods
    by_json = Supervisor(target).processes()
    by_xml = {i["name"]: i for i in plain._call("getAllProcessInfo")}
    assert sorted(by_json) == sorted(by_xml) == ["agent-01", "agent-02", "agent-03"]
    for name, info in by_json.items():
        assert (info.state, info.pid, info.log_file) == (
            by_xml[name]["statename"],
            by_xml[name]["pid"],
            by_xml[name]["stdout_logfile"],
        )

    monkeypatch.setattr(plugin, "ALL_PROCESS_INFO", f"{plugin.NAMESPACE}.notThere")
    older = Supervisor(target)
    assert {n: p.pid for n, p in older.processes().items()} == {
        n: p.pid for n, p in by_json.items()
    }
    assert older._plain_only  # asked once, then straight to getAllProcessInfo


def test_asking_ahead_of_a_supervisord_that_is_not_running_says_so(fleet_env):
    from multiagent.fleet.model.fleetfile import load_fleet
    from multiagent.fleet.supervisord.client import Supervisor, target_for

    fleet_env.write(three_agents())
    supervisor = Supervisor(target_for(load_fleet(fleet_env.fleet_file)))
    supervisor.ask_ahead()
    assert supervisor.is_running() is False
    status = fleet_env.run("status", check=False)
    assert "supervisord is not running" in status.stdout
