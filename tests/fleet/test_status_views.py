"""`status` shows the server like any program (with why it is down) and upstream agents'
state and job as their server has them."""

from __future__ import annotations

import json
import os
import socket
import subprocess

from fixtures_fleet import wait_until


def test_status_shows_why_the_embedded_server_is_down(fleet_env):
    fleet_env.start(fleet_env.agent_fleet(["sv1"]))
    fleet_env.ctl("stop", "tf-fleet-server")
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", fleet_env.port))
    squatter.listen()
    # supervisorctl start returns only once supervisord gave up (FATAL after its retries):
    # status is looked at meanwhile, as a user would while it retries.
    starting = subprocess.Popen(
        [*fleet_env.ctl_command(), "start", "tf-fleet-server"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cause = f"port {fleet_env.port} is in use by pid {os.getpid()}"
        # (until supervisord has the start request, status shows the server STOPPED)
        shown = wait_until(
            lambda: (
                (p := fleet_env.run("status", check=False))
                and cause in p.stdout
                and "tf-fleet-server STOPPED" not in p.stdout
                and p
            ),
            30,
            "status to say why the server is down",
        )
        assert shown.returncode == 1
        head = shown.stdout.splitlines()[0]
        assert head.startswith(f"server {fleet_env.server_url}: NOT reachable"), head
        state = head.split("tf-fleet-server ")[1].split(",")[0].split(":")[0]
        # retries, then FATAL; RUNNING too on a loaded host, for the moment between a start
        # that took longer than startsecs and its failed bind
        assert state in ("STARTING", "RUNNING", "BACKOFF", "FATAL", "EXITED"), head
        data = json.loads(fleet_env.run("status", "--json", check=False).stdout)
        assert data["server"]["reachable"] is False, data["server"]
    finally:
        squatter.close()
        starting.kill()  # only the client: supervisord goes on as it was
        starting.wait(10)


def test_status_shows_an_upstream_agents_job_from_its_server(fleet_env):
    fleet = fleet_env.upstream_fleet(["us1"], {"us1": ["uq"]})
    fleet_env.start(fleet)
    job = fleet_env.hold_running("uq")
    row = wait_until(
        lambda: (r := fleet_env.status()["us1"]) and r["job_id"] == job and r,
        10,
        "status to show the job",
    )
    assert row["state"] == "test" and row["phase"] == "test"
    fleet_env.release(job)
    fleet_env.assert_completed(job)
