"""Facts of this host that a valid fleet file can still get wrong, checked before `up`
writes anything; reported like validation errors."""

from __future__ import annotations

import os
import pwd

from multiagent.fleet.context import Context
from multiagent.fleet.model.fleetfile import FleetError, Problem
from multiagent.server.ports import port_holder


def check_host(ctx: Context) -> None:
    """Users of `user:` exist (and can be switched to)."""
    problems = []

    def problem(name: str, message: str) -> None:
        problems.append(Problem(str(ctx.fleet.path), None, name, "user", message))

    for name, agent in ctx.fleet.agents.items():
        if not agent.user:
            continue
        try:
            pwd.getpwnam(agent.user)
        except KeyError:
            problem(name, f"no such user {agent.user!r} on this host")
        if os.geteuid() != 0 and ctx.target.mode == "private":
            problem(
                name,
                "running agents as another user needs tf-fleet (and so its supervisord)"
                " to run as root",
            )
    if problems:
        raise FleetError(problems)


def check_before_writing(ctx: Context, supervisord_running: bool, server_ours: bool) -> None:
    """What must hold before `up` writes its first file: the host's supervisord answers
    and its include dir is writable (system mode), and the embedded server's port is free
    unless this fleet's own server holds it (`server_ours`)."""
    from multiagent.fleet.supervisord.client import Faults, SupervisorError

    if ctx.target.mode == "system":
        if not supervisord_running:
            raise SupervisorError(
                f"the system supervisord ({ctx.target.config}) is not answering on"
                f" {ctx.target.socket_url}; start it (e.g. `systemctl start supervisor`);"
                " nothing was written",
                Faults.UNREACHABLE,
            )
        directory = ctx.target.program_dir
        if not os.access(directory, os.W_OK | os.X_OK):
            raise FleetError(
                [
                    Problem(
                        str(ctx.fleet.path),
                        None,
                        None,
                        "supervisor.config",
                        f"cannot write programs into {directory} (its [include] dir)",
                    )
                ]
            )
    server = ctx.fleet.server
    if server.embedded and not server_ours:
        holder = port_holder(server.host, server.port)
        if holder:
            raise FleetError(
                [
                    Problem(
                        str(ctx.fleet.path),
                        None,
                        None,
                        "server.port",
                        f"port {server.port} is in use by {holder}; choose another port",
                    )
                ]
            )
