"""Who holds a TCP port: the server says it when it cannot listen, tf-fleet before `up`."""

from __future__ import annotations

import errno
import socket


def port_holder(host: str, port: int) -> str | None:
    """Who listens on host:port, in words ("pid 1234 (nginx)"), or None if it is free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return None
    except OSError as exc:
        # Only a taken port has a holder: another failure (a name that does not resolve,
        # a privileged port) is for the real bind to report.
        if exc.errno != errno.EADDRINUSE:
            return None
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
