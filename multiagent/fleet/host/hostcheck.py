"""Facts of this host that a valid fleet file can still get wrong, checked before `up`
writes anything; reported like validation errors."""

from __future__ import annotations

import os
import pwd

from multiagent.fleet.model.fleetfile import Fleet, FleetError, Problem
from multiagent.fleet.supervisord.client import Faults, SupervisorError, SupervisorTarget


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


def port_holder(host: str, port: int) -> str | None:
    """Who listens on host:port, in words ("pid 1234 (nginx)"), or None if it is free."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return None
    except OSError:
        pass
    finally:
        probe.close()
    return _listener(port) or "another process"


def _listener(port: int) -> str | None:
    import psutil

    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return "a process of another user"
            try:
                return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return None
