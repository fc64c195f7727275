"""System mode: fleets share the host's supervisord (Debian's `/usr/bin/supervisord` when
installed, as on a lab host) with each other and with hand-written programs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from fixtures_fleet import SLEEPER, FleetEnv, wait_until

from multiagent.fleet.model.layout import Layout

DEBIAN_SUPERVISORD = "/usr/bin/supervisord"


class HostSupervisord:
    """A host-wide supervisord of its own config in a temp dir, as a distro sets it up."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "supervisord.conf"
        self.include = root / "conf.d"
        self.include.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            textwrap.dedent(f"""\
            [unix_http_server]
            file={root}/sys.sock
            chmod=0700
            [supervisord]
            logfile={root}/supervisord.log
            pidfile={root}/supervisord.pid
            childlogdir={root}
            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
            [supervisorctl]
            serverurl=unix://{root}/sys.sock
            [include]
            files = {self.include}/*.conf
            """)
        )
        self.pid = 0

    def start(self) -> None:
        binary = (
            [DEBIAN_SUPERVISORD]
            if os.path.exists(DEBIAN_SUPERVISORD)
            else [sys.executable, "-m", "supervisor.supervisord"]
        )
        subprocess.run([*binary, "-c", str(self.conf)], check=True)
        pidfile = self.root / "supervisord.pid"
        self.pid = int(
            wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, "pid")
        )
        wait_until(lambda: self.ctl_proc("pid").returncode == 0, 20, "supervisord to answer")

    def ctl_proc(self, *args: str) -> subprocess.CompletedProcess[str]:
        ctl = shutil.which("supervisorctl") if os.path.exists(DEBIAN_SUPERVISORD) else None
        binary = [ctl] if ctl else [sys.executable, "-m", "supervisor.supervisorctl"]
        return subprocess.run(
            [*binary, "-c", str(self.conf), *args], capture_output=True, text=True, timeout=60
        )

    def ctl(self, *args: str) -> str:
        return self.ctl_proc(*args).stdout

    def states(self) -> dict[str, str]:
        lines = self.ctl("status").splitlines()
        return {line.split()[0]: line.split()[1] for line in lines if line.strip()}

    def stop(self) -> None:
        if not self.pid:
            return
        try:
            proc = psutil.Process(self.pid)
            children = proc.children(recursive=True)
            proc.terminate()
            psutil.wait_procs([proc], timeout=30)
        except psutil.NoSuchProcess:
            children = []
        for child in children:
            if child.is_running():
                child.kill()


@pytest.fixture
def host_supervisord(fleet_env) -> Iterator[HostSupervisord]:
    host = HostSupervisord(fleet_env.root / "host")
    try:
        host.start()
        yield host
    finally:
        host.stop()


def sleeper_fleet(env: FleetEnv, host: HostSupervisord, names: list[str], **server) -> dict:
    fleet: dict = {
        "server": {"embedded": True, "port": env.port, **server} if server else env.server_url,
        "supervisor": {"mode": "system", "config": str(host.conf)},
        "defaults": {"agent_command": SLEEPER, "startsecs": 1},
        "agents": {n: {"job_queues": ["q"]} for n in names},
    }
    return fleet


def second_fleet(env: FleetEnv) -> FleetEnv:
    other = FleetEnv(env.root / "b")
    other.root.mkdir()
    return other


def test_two_fleets_and_a_hand_written_program_share_the_host_supervisord(
    fleet_env, host_supervisord
):
    host = host_supervisord
    (host.include / "handmade.conf").write_text(f"[program:lab-09]\ncommand={SLEEPER}\n")
    host.ctl("update")
    wait_until(lambda: host.states().get("lab-09") == "RUNNING", 20, "lab-09")

    a = fleet_env
    a.write(sleeper_fleet(a, host, ["lab-01", "lab-02"], port=a.port))
    up = a.run("up")
    states = host.states()
    server_a = next(n for n in states if n.startswith("tf-fleet-server-"))
    assert {states["lab-01"], states["lab-02"], states[server_a]} == {"RUNNING"}, up.stdout

    b = second_fleet(a)
    before = sorted(p.name for p in host.include.iterdir())
    lab02 = (host.include / "lab-02.conf").read_text()
    for clash, owner in (("lab-02", "belongs to another fleet"), ("lab-09", "handmade.conf")):
        b.write(sleeper_fleet(b, host, [clash, "other-01"], port=b.port))
        for command in ("plan", "up"):
            refused = b.run(command, check=False)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert f"agent '{clash}'" in refused.stderr and owner in refused.stderr
            assert "nothing was changed" in refused.stderr
        assert sorted(p.name for p in host.include.iterdir()) == before  # nothing written
        assert (host.include / "lab-02.conf").read_text() == lab02
    assert host.states()["lab-02"] == "RUNNING" and host.states()[server_a] == "RUNNING"

    b.write(sleeper_fleet(b, host, ["other-01"], port=b.port))
    b.run("up")
    states = host.states()
    servers = sorted(n for n in states if n.startswith("tf-fleet-server-"))
    assert len(servers) == 2, states  # one server program per fleet
    assert states["other-01"] == "RUNNING"

    down = a.run("down")
    assert "stopped" in down.stdout
    states = host.states()
    assert not {"lab-01", "lab-02", server_a} & set(states), states
    assert states["other-01"] == "RUNNING" and states["lab-09"] == "RUNNING"
    assert not (host.include / "lab-01.conf").exists()
    assert (host.include / "handmade.conf").exists()
    # Nothing of fleet A comes back when the host's supervisord re-reads its config.
    host.ctl("reread")
    host.ctl("update")
    states = host.states()
    assert not {"lab-01", "lab-02", server_a} & set(states), states
    assert states["lab-09"] == "RUNNING"


def test_up_writes_nothing_while_the_host_supervisord_is_down(fleet_env):
    host = HostSupervisord(fleet_env.root / "host")  # configured, never started
    up = fleet_env.up(sleeper_fleet(fleet_env, host, ["dn-01"]), check=False)
    assert up.returncode == 1
    assert "is not answering" in up.stderr and "nothing was written" in up.stderr
    assert "Traceback" not in up.stderr
    assert list(host.include.iterdir()) == []


def test_the_servers_port_in_use_is_one_clear_error_before_anything_is_written(fleet_env):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", fleet_env.port))
    squatter.listen()
    try:
        fleet = fleet_env.agent_fleet(["pt-01"])
        up = fleet_env.up(fleet, check=False)
        assert up.returncode == 2, up.stdout + up.stderr
        assert f"port {fleet_env.port} is in use by pid {os.getpid()}" in up.stderr
        assert "Traceback" not in up.stderr
        assert not (fleet_env.state_dir / "supervisor" / "conf.d").exists()
        server = subprocess.run(
            [sys.executable, "-m", "multiagent", "server", "--port", str(fleet_env.port)]
            + ["--db", str(fleet_env.root / "x.db")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert server.returncode == 1
        assert "Traceback" not in server.stderr
        assert len(server.stderr.strip().splitlines()) == 1, server.stderr
    finally:
        squatter.close()


def test_the_fleet_file_example_for_system_mode_is_valid(fleet_env):
    text = yaml.safe_dump(
        {
            "server": "http://127.0.0.1:9",
            "supervisor": {"mode": "system", "config": "/etc/supervisor/supervisord.conf"},
            "agents": {"lab-01": {"job_queues": ["q"]}},
        }
    )
    fleet_env.fleet_file.write_text(text)
    assert fleet_env.run("validate").returncode == 0


def test_no_command_acts_on_another_fleets_agent(fleet_env, host_supervisord):
    host = host_supervisord
    a = fleet_env
    fleet = a.agent_fleet(["own-01"])
    fleet["supervisor"] = {"mode": "system", "config": str(host.conf)}
    pids = a.start(fleet)
    job = a.hold_running("shared")
    b = second_fleet(a)
    b.write(sleeper_fleet(b, host, ["own-01"], port=b.port))
    valid = b.run("validate")
    assert "`tf-fleet plan` also checks, on this host: that no other fleet" in valid.stdout
    for args in (
        ("restart", "--safe", "own-01"),
        ("restart", "--force", "own-01"),
        ("restart", "--safe", "--all", "--json"),  # as the Ansible module's `restarted`
        ("drain", "own-01"),
        ("resume", "own-01"),
        ("logs", "own-01"),
    ):
        refused = b.run(*args, check=False)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert "agent 'own-01'" in refused.stderr and "belongs to another fleet" in refused.stderr
        assert "nothing was changed" in refused.stderr
    assert not Layout(a.state_dir).drain_file("own-01").exists()
    assert [p.pid for p in a.agent_processes("own-01")] == [pids["own-01"]]
    a.release(job)
    a.same_process_until_done("own-01", pids["own-01"], job)
    a.assert_completed(job)
    assert host.states()["own-01"] == "RUNNING"
