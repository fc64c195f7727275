"""Click commands `tf-fleet server` and `tf-fleet submit` (registered by multiagent.cli)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from multiagent.vocabulary import parse_duration

DEFAULT_SERVER = "http://127.0.0.1:8585"


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


@click.command("server")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; anything but loopback needs --token-file.",
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
    help="Require `Authorization: Bearer <file content>` on agent/submit endpoints.",
)
@click.option(
    "--threads",
    default=4,
    show_default=True,
    type=click.IntRange(1, 256),
    help="waitress worker threads (more only adds GIL contention; see bench/).",
)
def server_command(
    host: str,
    port: int,
    db_path: Path | None,
    agent_ttl: float,
    token_file: Path | None,
    threads: int,
) -> None:
    """Run the local Testflinger-compatible server (API v1 + Agents pages)."""
    from .auth import read_token_file
    from .serve import is_loopback, run_server

    token = None
    if token_file is not None:
        try:
            token = read_token_file(token_file)
        except (OSError, ValueError) as exc:
            raise click.UsageError(f"--token-file: {exc}") from exc
    if token is None and not is_loopback(host):
        raise click.UsageError(
            f"binding {host} (not loopback) exposes the server; give --token-file too"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sys.exit(
        run_server(
            host=host,
            port=port,
            db_path=db_path or default_db(),
            agent_ttl=agent_ttl,
            token=token,
            threads=threads,
        )
    )


@click.command("submit")
@click.argument("job_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--server",
    envvar="TESTFLINGER_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    help="Server URL (env TESTFLINGER_SERVER).",
)
@click.option("--wait", is_flag=True, help="Follow the job to its end; exit 1 if a phase failed.")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Bearer token for a server started with --token-file.",
)
@click.option(
    "--poll-interval",
    default=2.0,
    show_default=True,
    type=float,
    help="Seconds between polls with --wait.",
)
def submit_command(
    job_file: Path, server: str, wait: bool, token_file: Path | None, poll_interval: float
) -> None:
    """Submit JOB_FILE (YAML or JSON) with its attachments; print the job id."""
    import requests
    import yaml

    from .auth import read_token_file
    from .submit import Client, SubmitError, follow, pack_attachments

    try:
        job = yaml.safe_load(job_file.read_text())
    except yaml.YAMLError as exc:
        raise click.UsageError(f"{job_file}: not valid YAML: {exc}") from exc
    if not isinstance(job, dict):
        raise click.UsageError(f"{job_file}: a job is a mapping with at least job_queue")
    token = read_token_file(token_file) if token_file else None
    client = Client(server, token)
    try:
        job, archive = pack_attachments(job, job_file.resolve().parent)
        job_id = client.submit(job, archive)
        click.echo(job_id)
        if wait:
            sys.exit(follow(client, job_id, click.echo, interval=poll_interval))
    except SubmitError as exc:
        raise click.ClickException(str(exc)) from exc
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {server}: {exc}") from exc
