"""Click command `tf-fleet server` (registered by multiagent.fleet.cli)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import click

from multiagent.vocabulary import parse_duration


def default_db() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "tf-fleet" / "server.db"


def _ttl(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if seconds <= 0:
        raise click.BadParameter(f"must be longer than 0 seconds, got {value!r}")
    return seconds


@click.group("server", invoke_without_command=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; anything but loopback needs a client or --token-file.",
)
@click.option("--port", default=8585, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"SQLite file, created on first start [default: {default_db()}]",
)
@click.option(
    "--agent-ttl",
    default="7d",
    show_default=True,
    callback=_ttl,
    help="Forget agents silent this long: 7d, 12h, 30m, 45s or seconds.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A shared bearer token (the file's content) that may do everything.",
)
@click.option(
    "--require-auth",
    is_flag=True,
    help="Refuse callers without a token (401) instead of treating them as contributors.",
)
@click.option(
    "--any-provision-data",
    is_flag=True,
    help="Accept any provision_data mapping (home-made device connectors).",
)
@click.option(
    "--public-pages",
    is_flag=True,
    help="Open the agents and queues pages to callers without a token (never job data).",
)
@click.option(
    "--limit",
    "limit_settings",
    multiple=True,
    metavar="NAME=SIZE",
    help="Change a request bound, e.g. artifact_bytes=1G or text_chars=8192 (README).",
)
@click.option(
    "--ack-timeout",
    default="5m",
    show_default=True,
    callback=_ttl,
    help="A job handed out that its agent has not acknowledged this long waits again.",
)
@click.option(
    "--threads",
    default=4,
    show_default=True,
    type=click.IntRange(1, 256),
    help="waitress worker threads (more only adds GIL contention; see bench/).",
)
@click.pass_context
def server_command(
    ctx: click.Context,
    host: str,
    port: int,
    db_path: Path | None,
    agent_ttl: float,
    token_file: Path | None,
    require_auth: bool,
    any_provision_data: bool,
    public_pages: bool,
    limit_settings: tuple[str, ...],
    ack_timeout: float,
    threads: int,
) -> None:
    """Run the local Testflinger-compatible server (API v1 + Agents pages).

    The sub-commands manage its clients and credentials without a running server.
    """
    if ctx.invoked_subcommand is not None:
        ctx.meta[GROUP_DB] = db_path
        return
    from multiagent.server.limits import Limits
    from multiagent.server.policy import Policy
    from multiagent.server.serve import is_loopback, run_server
    from multiagent.tokenfile import read_token_file

    try:
        limits = Limits().with_settings(list(limit_settings))
    except ValueError as exc:
        raise click.UsageError(f"--limit: {exc}") from exc

    token = None
    if token_file is not None:
        try:
            token = read_token_file(token_file)
        except (OSError, ValueError) as exc:
            raise click.UsageError(f"--token-file: {exc}") from exc
    db = db_path or default_db()
    if token is None and not is_loopback(host) and not _has_clients(db):
        raise click.UsageError(
            f"binding {host} (not loopback) exposes the server; create a client "
            "(tf-fleet server create-client) or give --token-file"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    policy = Policy(
        agent_ttl=agent_ttl,
        token=token,
        require_auth=require_auth,
        any_provision_data=any_provision_data,
        limits=limits,
        public_pages=public_pages,
        ack_timeout=ack_timeout,
    )
    code = run_server(host=host, port=port, db_path=db, policy=policy, threads=threads)
    from multiagent.fastexit import leave

    leave(code)  # the app's teardown would take longer than the server's own stop


GROUP_DB = "tf_server.db"  # ctx.meta key: the group's --db, read by every sub-command


def sub_db(ctx: click.Context, own: Path | None) -> Path:
    """The database a sub-command works on: its own --db or the group's (`tf-fleet server
    --db X create-client`), the default without either; both, naming two files: refused."""
    group = ctx.meta.get(GROUP_DB)
    if own is not None and group is not None and own != group:
        raise click.UsageError(
            f"--db given twice: {group} before {ctx.info_name!r} and {own} after it; give one"
        )
    return own or group or default_db()


def _has_clients(db: Path) -> bool:
    return db.exists() and _accounts(db).has_clients()


def _accounts(db: Path):
    from multiagent.server.accounts import Accounts
    from multiagent.server.db import Store

    return Accounts(Store(db, clock=time.time))


DB_OPTION = click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"The server's SQLite file [default: {default_db()}]",
)


def _json_map(ctx: click.Context, param: click.Parameter, value: str | None) -> dict | None:
    if value is None:
        return None
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
        for k, v in data.items()
    ):
        raise click.BadParameter('expected {"queue or *": integer, ...}')
    return data


@server_command.command("create-client")
@DB_OPTION
@click.option("--client-id", required=True, help="The client's login name.")
@click.option(
    "--role",
    type=click.Choice(["admin", "manager", "contributor", "agent"]),
    default="contributor",
    show_default=True,
)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the secret from this file; without it a secret is generated and printed.",
)
@click.option("--max-priority", callback=_json_map, help='JSON, e.g. {"*": 100}.')
@click.option("--max-reservation-time", callback=_json_map, help='JSON seconds, e.g. {"*": 86400}.')
@click.option("--allowed-queue", "allowed_queues", multiple=True, help="A restricted queue.")
@click.option("--email", default=None)
@click.pass_context
def create_client_command(
    ctx: click.Context,
    db_path: Path | None,
    client_id: str,
    role: str,
    secret_file: Path | None,
    max_priority: dict | None,
    max_reservation_time: dict | None,
    allowed_queues: tuple[str, ...],
    email: str | None,
) -> None:
    """Create a client (or update it: a new secret replaces the old one).

    Once a client exists the server leaves open mode: callers without a token are
    upstream's anonymous contributors.
    """
    from multiagent.server.tokens import new_client_secret

    secret = secret_file.read_text().strip() if secret_file else new_client_secret()
    if len(secret) < 15:
        raise click.UsageError("a client secret has at least 15 characters")
    doc: dict = {"role": role}
    optional = {
        "max_priority": max_priority,
        "max_reservation_time": max_reservation_time,
        "allowed_queues": list(allowed_queues) or None,
        "email": email,
    }
    doc.update({k: v for k, v in optional.items() if v is not None})
    accounts = _accounts(sub_db(ctx, db_path))
    created = accounts.save(client_id, doc, secret=secret)
    for queue in allowed_queues:
        accounts.restrict(queue, client_id)
    click.echo(f"{'created' if created else 'updated'} client {client_id!r} ({role})")
    if secret_file is None:
        click.echo(f"secret: {secret}")


@server_command.command("agent-token")
@DB_OPTION
@click.option("--name", "agent", required=True, help="The agent (its client id).")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The agent's token file (--token-file), written 0600.",
)
@click.option(
    "--lifetime",
    default="365d",
    show_default=True,
    callback=_ttl,
    help="How long the refresh token stays valid.",
)
@click.pass_context
def agent_token_command(
    ctx: click.Context, db_path: Path | None, agent: str, out: Path, lifetime: float
) -> None:
    """Give an agent its own credential: an agent-role client named after it and a token
    file `{"refresh_token": ...}` that tf-agent and testflinger-agent read with --token-file.

    Idempotent: a file that still holds a valid token for at least half its lifetime is
    left alone (prints "unchanged")."""
    from multiagent.server.credentials import AgentTokenError, ensure_agent_token

    try:
        changed = ensure_agent_token(sub_db(ctx, db_path), agent, out, lifetime=lifetime)
    except AgentTokenError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"{'wrote' if changed else 'unchanged'} {out}")


@server_command.command("revoke")
@DB_OPTION
@click.option("--client-id", required=True)
@click.pass_context
def revoke_command(ctx: click.Context, db_path: Path | None, client_id: str) -> None:
    """Revoke every refresh token of a client (its access tokens end within 10 minutes)."""
    count = _accounts(sub_db(ctx, db_path)).revoke_client(client_id)
    click.echo(f"revoked {count} refresh token{'' if count == 1 else 's'} of {client_id!r}")


@server_command.command("delete-client")
@DB_OPTION
@click.option("--client-id", required=True)
@click.pass_context
def delete_client_command(ctx: click.Context, db_path: Path | None, client_id: str) -> None:
    """Delete a client and revoke its refresh tokens."""
    if not _accounts(sub_db(ctx, db_path)).delete(client_id):
        raise click.ClickException(f"no client {client_id!r}")
    click.echo(f"deleted client {client_id!r}")


@server_command.command("clients")
@DB_OPTION
@click.pass_context
def clients_command(ctx: click.Context, db_path: Path | None) -> None:
    """List the clients and their permissions (never a secret)."""
    for client in _accounts(sub_db(ctx, db_path)).all():
        click.echo(json.dumps(client, sort_keys=True))
