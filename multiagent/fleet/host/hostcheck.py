"""Facts of this host that a valid fleet file can still get wrong, checked before `up`
writes anything; reported like validation errors."""

from __future__ import annotations

import os
import pwd

from multiagent.fleet.model.fleetfile import Fleet, FleetError, Problem
from multiagent.fleet.supervisord.client import Faults, SupervisorError, SupervisorTarget
from multiagent.server.ports import port_holder


def check_host(fleet: Fleet, mode: str) -> None:
    """Users of `user:` exist (and can be switched to; `mode`: the supervisord's)."""
    problems = []

    def problem(name: str, message: str) -> None:
        problems.append(Problem(str(fleet.path), None, name, "user", message))

    for name, agent in fleet.agents.items():
        if not agent.user:
            continue
        try:
            pwd.getpwnam(agent.user)
        except KeyError:
            problem(name, f"no such user {agent.user!r} on this host")
        if os.geteuid() != 0 and mode == "private":
            problem(
                name,
                "running agents as another user needs tf-fleet (and so its supervisord)"
                " to run as root",
            )
    if problems:
        raise FleetError(problems)


def check_before_writing(
    fleet: Fleet, target: SupervisorTarget, supervisord_running: bool, server_ours: bool
) -> None:
    """What must hold before `up` writes its first file: the host's supervisord answers
    and its include dir is writable (system mode), and the embedded server's port is free
    unless this fleet's own server holds it (`server_ours`)."""
    if target.mode == "system":
        if not supervisord_running:
            raise SupervisorError(
                f"the system supervisord ({target.config}) is not answering on"
                f" {target.socket_url}; start it (e.g. `systemctl start supervisor`);"
                " nothing was written",
                Faults.UNREACHABLE,
            )
        directory = target.program_dir
        if not os.access(directory, os.W_OK | os.X_OK):
            raise FleetError(
                [
                    Problem(
                        str(fleet.path),
                        None,
                        None,
                        "supervisor.config",
                        f"cannot write programs into {directory} (its [include] dir)",
                    )
                ]
            )
    server = fleet.server
    if server.embedded and not server_ours:
        holder = port_holder(server.host, server.port)
        if holder:
            raise FleetError(
                [
                    Problem(
                        str(fleet.path),
                        None,
                        None,
                        "server.port",
                        f"port {server.port} is in use by {holder}; choose another port",
                    )
                ]
            )
