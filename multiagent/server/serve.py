"""Run the app under waitress until SIGTERM/SIGINT; the exit is clean (status 0)."""

from __future__ import annotations

import errno
import ipaddress
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multiagent.server.expiry import SWEEP_INTERVAL, Sweeper
from multiagent.server.keepalive import keepalive_channel_class
from multiagent.server.limits import BODY_ENDPOINTS, Limits

if TYPE_CHECKING:
    from multiagent.server.policy import Policy

log = logging.getLogger("multiagent.server")


class _Stop(SystemExit):
    """Raised from the signal handler to leave waitress' main loop.

    A SystemExit: wasyncore re-raises that (rather than logging it in handle_error when the
    signal lands inside a channel handler), and waitress' run() turns it into a clean close.
    """


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def auth_summary(app: Any, token: str | None, require_auth: bool) -> str:
    """One line saying who may do what, printed at start."""
    clients = app.extensions["tf_accounts"].has_clients()
    if token is None and not clients:
        return (
            "auth: none - no client is configured, so every caller on this address may do "
            "everything (create one with `tf-fleet server create-client`)"
        )
    ways = (["clients"] if clients else []) + (["the shared token"] if token else [])
    anonymous = "refused (401)" if require_auth else "upstream's anonymous contributors"
    return f"auth: {' and '.join(ways)}; callers without a token are {anonymous}"


def run_server(
    *,
    host: str,
    port: int,
    db_path: Path,
    policy: Policy,
    threads: int = 4,
    sweep_interval: float = SWEEP_INTERVAL,
) -> int:
    from multiagent.server.app import create_app
    from multiagent.server.ports import port_holder

    # Building the app takes a good part of a second (imports): a port that is taken fails
    # at once instead, before supervisord's `startsecs` would count the attempt as started.
    holder = port_holder(host, port)
    if holder is not None:
        return _cannot_listen(host, port, f"port {port} is in use by {holder}")
    app = create_app(db_path, policy)
    sweeper = Sweeper(app.extensions["tf_store"], sweep_interval, policy.ack_timeout)
    sweeper.sweep_once()
    # Many agents keep a connection open each: waitress' default limit (100) is too low, and
    # its loop runs on epoll (eventloop.py), not select(), which stops at 1024 descriptors.
    try:
        server = _listen(app, host, port, threads, policy.limits)
    except OSError as exc:
        return _cannot_listen(host, port, _why(exc, port))
    server.channel_class = keepalive_channel_class()
    # waitress warns on every queued request ("Task queue depth is N"): noise under load.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    said = [
        f"tf-fleet server listening on http://{host}:{server.effective_port} (db {db_path})",
        auth_summary(app, policy.token, policy.require_auth),
    ]
    return _serve(server, sweeper, app, said)


def _cannot_listen(host: str, port: int, why: str) -> int:
    print(f"tf-fleet server: cannot listen on {host}:{port}: {why}", file=sys.stderr)
    return 1


def _why(exc: OSError, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        from multiagent.server.ports import port_holder

        return f"port {port} is in use by {port_holder('127.0.0.1', port) or 'another process'}"
    return exc.strerror or str(exc)


def _listen(app: Any, host: str, port: int, threads: int, limits: Limits) -> Any:
    from waitress import create_server

    from multiagent.server.eventloop import EpollLoop, WatchedMap

    server = create_server(
        app,
        map=WatchedMap(),
        host=host,
        port=port,
        threads=threads,
        connection_limit=2000,
        asyncore_use_poll=True,
        ident="tf-fleet",
        # The largest body any endpoint takes; each endpoint's own limit is checked first.
        max_request_body_size=max(limits.body_limit(name) for name in (None, *BODY_ENDPOINTS)),
    )
    server.asyncore = EpollLoop  # waitress' loop over epoll: eventloop.py says why
    return server


def _serve(server: Any, sweeper: Any, app: Any, said: list[str]) -> int:
    def stop(signum: int, frame: object) -> None:
        # Shutdown is bounded (see finally); a second signal must not abort it half-way.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise _Stop(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sweeper.start()
    for line in said:
        print(line, flush=True)
    try:
        # Returns once a signal raised _Stop: waitress catches SystemExit and closes itself.
        server.run()
    finally:
        log.info("stopping")
        sweeper.stop()
        server.close()  # idempotent; covers any other way out of run()
        app.extensions["tf_store"].close()
    sys.stdout.flush()
    return 0
