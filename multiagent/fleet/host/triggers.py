"""How tf-fleet asks an agent to do something when it is idle: SIGUSR1, the restart file,
the drain flag, and (for upstream agents) the server-side agent state."""

from __future__ import annotations

import os
from pathlib import Path

from multiagent.fleet.errors import UserError
from multiagent.fleet.host.files import write_atomic
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.supervisord.client import Supervisor
from multiagent.vocabulary import (
    DrainMode,
    drain_file_name,
    drain_flag_text,
    read_drain_flag,
    restart_file_name,
    status_file_name,
)


class TriggerError(UserError):
    pass


def restart_file(restart_dir: str, name: str) -> Path:
    return Path(restart_dir) / restart_file_name(name)


def ask_restart_by_signal(supervisor: Supervisor, name: str) -> None:
    supervisor.signal(name, "USR1")


def ask_restart_by_file(restart_dir: str, name: str) -> Path:
    """Create the restart file. The directory is usually /tmp, writable by anyone: never
    follow a planted symlink, and never take over a file somebody else made."""
    path = restart_file(restart_dir, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        st = os.lstat(path)
        if not os.path.isfile(path) or os.path.islink(path) or st.st_uid not in (0, os.geteuid()):
            raise TriggerError(
                f"{path} exists and is not a regular file of ours; remove it and try again"
            ) from None
        return path  # already asked
    except OSError as exc:
        raise TriggerError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as handle:
        handle.write("restart requested by tf-fleet\n")
    return path


def read_drain(layout: Layout, name: str) -> str | None:
    """The drain flag in the agent's run dir (the agent's user may write there: see
    vocabulary.read_drain_flag for why a link or a fifo counts as DrainMode.DRAIN)."""
    return read_drain_flag(str(layout.drain_file(name)))


def set_drain(layout: Layout, name: str, mode: str = DrainMode.DRAIN, reason: str = "") -> None:
    """Write the drain flag (a DRAIN flag carries the operator's reason on its second
    line, which tf-agent shows on the server)."""
    text = drain_flag_text(mode, reason)
    write_atomic(layout.drain_file(name), text)
    # An agent started by an older tf-fleet looks for the flag in run/ itself.
    if layout.legacy_run_file(status_file_name(name)) is not None:
        write_atomic(layout.run_dir / drain_file_name(name), text)


def clear_drain(layout: Layout, name: str) -> None:
    layout.drain_file(name).unlink(missing_ok=True)
    legacy = layout.legacy_run_file(drain_file_name(name))
    if legacy is not None:
        legacy.unlink(missing_ok=True)


def set_server_state(
    server_url: str, name: str, state: str, comment: str, token_file: str | None = None
) -> None:
    """Upstream agents read their state from the server: `offline` makes an idle one stop
    taking jobs, `waiting` lets it go on. The only drain an upstream agent understands.
    A server with clients takes it only from the agent's own credential (`token_file`)."""
    from multiagent.fleet.serverclient import ServerClient, ServerError

    try:
        client = ServerClient.with_token_file(server_url, token_file)
        client.set_agent_state(name, state, comment)
    except ServerError as exc:
        raise TriggerError(f"cannot set {name}'s state on {server_url}: {exc}") from exc
