"""README promises of the `tf-fleet` command line, each checked by what a user sees: exit
codes, output, the job's final state on the server, and the processes left on the host."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import yaml
from fixtures_fleet import SLEEPER, wait_until

REPO = Path(__file__).parents[2]


def _job_processes(agent_pid: int, cmdline: list[str]) -> list[psutil.Process]:
    """The job's processes below an agent with this command line."""
    return [
        proc
        for proc in psutil.Process(agent_pid).children(recursive=True)
        if proc.cmdline() == cmdline
    ]


def _gone(procs: list[psutil.Process]) -> bool:
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def _busy_with_children(fleet_env, name: str, seconds: int) -> tuple[int, str, list]:
    """One tf-agent running a job whose test phase left a background child and a
    foreground one (`sleep N & sleep N`)."""
    pid = fleet_env.start(fleet_env.agent_fleet([name], {name: [f"q-{name}"]}))[name]
    job = fleet_env.submit(f"q-{name}", 0, f"sleep {seconds} & sleep {seconds}; echo done")
    fleet_env.wait_running(job)
    sleeps = wait_until(
        lambda: len(found := _job_processes(pid, ["sleep", str(seconds)])) == 2 and found,
        what="both of the job's sleeps",
    )
    return pid, job, sleeps


def _assert_interrupted(fleet_env, job: str) -> None:
    """As tf-agent reports a job killed by SIGTERM: `cancelled`, the test phase 247."""
    fleet_env.wait_for(lambda: fleet_env.job_state(job) == "cancelled", 20, "job cancelled")
    result = fleet_env.result(job)
    assert result["test_status"] == 247, result


def test_down_force_mid_job_stops_everything_and_leaves_no_job_process(fleet_env):
    pid, job, sleeps = _busy_with_children(fleet_env, "df1", 313)
    refused = fleet_env.run("down", check=False)
    assert refused.returncode == 1 and "df1 is busy" in refused.stderr
    assert _gone(sleeps) is False and psutil.pid_exists(pid)

    out = fleet_env.run("down", "--force")
    assert "stopped" in out.stdout and "df1" in out.stdout
    # stopasgroup/killasgroup: the job's children went with the agent, background one too
    assert _gone(sleeps), [p.pid for p in sleeps]
    assert fleet_env.processes() == [] and fleet_env.agent_processes() == []
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    fleet_env.run("up")  # the server's database kept what the agent reported
    _assert_interrupted(fleet_env, job)


def test_hard_restart_force_mid_job_replaces_the_process_and_kills_the_job(fleet_env):
    pid, job, sleeps = _busy_with_children(fleet_env, "hf1", 317)
    refused = fleet_env.run("restart", "hf1", check=False)
    assert refused.returncode == 1 and f"job {job}" in refused.stderr
    assert [p.pid for p in fleet_env.agent_processes("hf1")] == [pid]

    out = fleet_env.run("restart", "hf1", "--force")
    restarted = re.search(r"hf1: restarted \(pid (\d+)\)", out.stdout)
    assert restarted, out.stdout
    new_pid = int(restarted.group(1))
    assert new_pid != pid
    assert f"interrupted hf1: waiting for job {job} in phase test" in out.stdout
    assert f"job {job} is cancelled on the server" in out.stdout
    assert _gone(sleeps), [p.pid for p in sleeps]
    _assert_interrupted(fleet_env, job)
    assert [p.pid for p in fleet_env.agent_processes("hf1")] == [new_pid]
    # the new process takes jobs again
    after = fleet_env.submit("q-hf1", 0)
    fleet_env.assert_completed(after)


def test_logs_follow_prints_lines_written_later(fleet_env):
    fleet_env.start(fleet_env.agent_fleet(["lf1"], {"lf1": ["q-lf"]}))
    follower = fleet_env.started("logs", "lf1", "-f", "-n", "1")
    lines: list[str] = []
    stdout = follower.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: lines, 15, "the last line of the log")
        job = fleet_env.submit("q-lf", 0)  # the agent logs `starting job <id>` from now on
        fleet_env.assert_completed(job)
        wait_until(lambda: any(f"starting job {job}" in line for line in lines), 15, "the new line")
        assert follower.poll() is None  # still following
    finally:
        os.kill(follower.pid, signal.SIGTERM)
        follower.wait(10)
        reader.join(5)


def test_tf_fleet_config_selects_the_fleet_file_and_state_dir_overrides(fleet_env, tf_server):
    fleet = {
        "server": tf_server.url,  # it answers that the agent holds no job: `down` may stop it
        "defaults": {"agent_command": SLEEPER},
        "agents": {"env-1": {"job_queues": ["q"]}},
    }
    fleet_env.write(fleet)  # its state_dir: root/state
    elsewhere = fleet_env.root / "elsewhere"
    elsewhere.mkdir()
    override = fleet_env.root / "override"
    env = {**os.environ, "TF_FLEET_CONFIG": str(fleet_env.fleet_file)}

    def tf_fleet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "multiagent", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=elsewhere,  # no fleet.yaml here: only $TF_FLEET_CONFIG can name it
            timeout=120,
        )

    valid = tf_fleet("validate")
    assert valid.returncode == 0 and str(fleet_env.fleet_file) in valid.stdout, valid.stderr
    fleet_env.state_dir = override  # where this test's clean-up looks for supervisord
    up = tf_fleet("--state-dir", str(override), "up")
    assert up.returncode == 0, up.stdout + up.stderr
    status = tf_fleet("--state-dir", str(override), "status", "--json")
    assert status.returncode == 0 and '"env-1"' in status.stdout
    assert (override / "supervisor/supervisord.conf").is_file()
    assert (override / "supervisor/conf.d/env-1.conf").is_file()
    assert (override / "agents/env-1/testflinger-agent.conf").is_file()
    assert str(override) in (override / "supervisor/conf.d/env-1.conf").read_text()
    # nothing in the fleet file's state_dir (root/state), nothing beside it
    assert {p.name for p in fleet_env.root.iterdir()} == {"fleet.yaml", "elsewhere", "override"}
    assert list(elsewhere.iterdir()) == []
    assert len(fleet_env.agent_processes("env-1")) == 1
    down = tf_fleet("--state-dir", str(override), "down")
    assert down.returncode == 0, down.stderr
    assert fleet_env.processes() == [] and fleet_env.agent_processes() == []


def test_restart_file_refuses_a_planted_symlink(fleet_env):
    fleet = fleet_env.agent_fleet(["sy1"], {"sy1": ["q-sy"]})
    fleet["restart"]["method"] = "file"
    restart_dir = Path(fleet["restart"]["restart_dir"])
    pid = fleet_env.start(fleet)["sy1"]
    victim = fleet_env.root / "victim.txt"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    planted = restart_dir / "TESTFLINGER-DEVICE-RESTART-sy1"
    restart_dir.mkdir(exist_ok=True)
    planted.symlink_to(victim)
    before = victim.stat()

    out = fleet_env.run("restart", "--safe", "sy1", "--timeout", "10s", check=False)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, out.stderr
    assert str(planted) in errors[0] and "not a regular file" in errors[0], errors
    assert "Traceback" not in out.stderr + out.stdout
    assert victim.read_text() == "precious\n"
    after = victim.stat()
    assert (after.st_mode, after.st_mtime_ns, after.st_size) == (
        before.st_mode,
        before.st_mtime_ns,
        before.st_size,
    )
    assert planted.is_symlink()
    assert [p.pid for p in fleet_env.agent_processes("sy1")] == [pid]


def _start_supervisord_tracing(fleet_env) -> int:
    """The fleet's own supervisord, started from its rendered config with loglevel trace,
    which logs every XML-RPC method called on it."""
    conf = fleet_env.state_dir / "supervisor/supervisord.conf"
    subprocess.run(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf), "-e", "trace"],
        check=True,
    )
    return wait_until(
        lambda: (
            fleet_env.supervisord_pid()
            and psutil.pid_exists(fleet_env.supervisord_pid())
            and (fleet_env.state_dir / "supervisor.sock").exists()
            and fleet_env.supervisord_pid()
        ),
        what="the tracing supervisord",
    )


def test_second_up_without_change_skips_reload_config_and_touches_no_agent(fleet_env, tf_server):
    fleet_env.write(
        {
            "server": tf_server.url,  # it answers that the agents hold no job: `down` stops them
            "defaults": {"agent_command": SLEEPER, "startsecs": 1},
            "agents": {f"sk-{i}": {"job_queues": ["q"]} for i in (1, 2)},
        }
    )
    fleet_env.run("up")
    fleet_env.run("down")
    supervisord = _start_supervisord_tracing(fleet_env)
    (fleet_env.state_dir / "supervisor/applied.json").unlink(missing_ok=True)
    log = fleet_env.state_dir / "supervisor/supervisord.log"

    mark = log.stat().st_size
    fleet_env.run("up")  # no record of what was applied: it must ask supervisord
    first = log.read_text()[mark:]
    assert "XML-RPC method called: supervisor.reloadConfig()" in first
    assert (fleet_env.state_dir / "supervisor/applied.json").is_file()
    pids = fleet_env.wait_for(
        lambda: (
            (rows := fleet_env.status())
            and all(r["process"] == "RUNNING" for r in rows.values())
            and {n: r["pid"] for n, r in rows.items()}
        ),
        what="both agents to run",
    )

    mark = log.stat().st_size
    second = fleet_env.run("up")
    assert second.stdout.strip() == "2 unchanged"
    calls = re.findall(r"XML-RPC method called: (\S+)\(\)", log.read_text()[mark:])
    assert calls, "supervisord logged no call: is it tracing?"
    assert "supervisor.reloadConfig" not in calls, calls
    # one look at every process (through tf-fleet's plugin, as one JSON string): each
    # costs supervisord a pass over all of them
    looks = [c for c in calls if c.endswith(("getAllProcessInfo", "getAllProcessInfoJSON"))]
    assert looks == ["tffleet.getAllProcessInfoJSON"], calls
    assert not {c for c in calls if c.split(".")[-1].startswith(("stop", "start", "signal"))}
    assert {n: r["pid"] for n, r in fleet_env.status().items()} == pids
    assert fleet_env.supervisord_pid() == supervisord


def test_up_never_restarts_supervisord(fleet_env):
    fleet = fleet_env.agent_fleet(["ns1", "ns2"])
    fleet_env.start(fleet)
    supervisord = fleet_env.supervisord_pid()
    created = psutil.Process(supervisord).create_time()

    def same_supervisord() -> None:
        assert fleet_env.supervisord_pid() == supervisord
        assert psutil.Process(supervisord).create_time() == created

    fleet["agents"]["ns3"] = {"job_queues": ["shared"]}
    assert "1 add" in fleet_env.up(fleet).stdout
    same_supervisord()
    fleet["agents"]["ns1"]["environment"] = {"LAB_MARK": "x"}
    assert "1 replace" in fleet_env.up(fleet).stdout
    same_supervisord()
    del fleet["agents"]["ns2"]
    assert "1 remove" in fleet_env.up(fleet).stdout
    same_supervisord()
    assert set(fleet_env.status()) == {"ns1", "ns3"}


def test_readme_demo(fleet_env):
    """README "Set up": the example fleet `up`, a job through it with `submit --wait`,
    then `status`, `restart --safe --all` and `down --safe` (only the port and the state
    dir of etc/fleet.example.yaml changed)."""
    example = yaml.safe_load((REPO / "etc/fleet.example.yaml").read_text())
    text = (REPO / "etc/fleet.example.yaml").read_text()
    assert example["server"] == "embedded" and example["state_dir"] == "../.tf-fleet"
    text = text.replace("server: embedded ", f"server: {{embedded: true, port: {fleet_env.port}}} ")
    text = text.replace("state_dir: ../.tf-fleet ", "state_dir: state ")
    fleet_env.fleet_file.write_text(text)
    shutil.copy(REPO / "etc/job.example.yaml", fleet_env.root / "job.example.yaml")
    changed = yaml.safe_load(text)
    assert {k: v for k, v in changed.items() if k not in ("server", "state_dir")} == {
        k: v for k, v in example.items() if k not in ("server", "state_dir")
    }

    up = fleet_env.run("up")
    for name in ("tf-fleet-server", "demo-01", "demo-02", "demo-03"):
        assert f"started {name}\n" in up.stdout, up.stdout
    assert "running: 4 of 4 started programs" in up.stdout, up.stdout
    # the server is not one of the agents
    assert up.stdout.splitlines()[-1] == "3 add; server tf-fleet-server: add", up.stdout
    submit = subprocess.run(
        [sys.executable, "-m", "multiagent", "submit", "job.example.yaml"]
        + ["--server", fleet_env.server_url, "--wait", "--poll-interval", "0.5"],
        capture_output=True,
        text=True,
        cwd=fleet_env.root,
        timeout=120,
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr
    found = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", submit.stdout + submit.stderr)
    assert found, submit.stdout + submit.stderr
    job = found.group(0)
    fleet_env.assert_completed(job)
    status = fleet_env.run("status")
    assert all(n in status.stdout for n in ("demo-01", "demo-02", "demo-03"))
    restart = fleet_env.run("restart", "--safe", "--all")
    assert "3/3 back." in restart.stdout
    down = fleet_env.run("down", "--safe")
    assert "supervisord stopped" in down.stdout
    assert fleet_env.processes() == [] and fleet_env.agent_processes() == []


pytestmark = pytest.mark.timeout(120)
