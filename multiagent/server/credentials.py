"""Per-agent credentials for `tf-fleet up`: an agent-role client and its token file.

`ensure_agent_token(db, agent, out)` is what `tf-fleet server agent-token` runs; the fleet
side may call it directly (no server needs to run: it writes the server's SQLite file).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from multiagent.server.accounts import AGENT, Accounts
from multiagent.server.db import Store
from multiagent.server.tokens import new_client_secret
from multiagent.tokenfile import read_token_file

AGENT_TOKEN_LIFETIME = 365 * 86400.0


class AgentTokenError(Exception):
    """The name belongs to a client that is not an agent."""


def write_private(path: Path, text: str) -> None:
    """Write a credential file 0600, atomically, never through a symlink."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ensure_agent_token(
    db_path: str | Path, agent: str, out: Path, *, lifetime: float = AGENT_TOKEN_LIFETIME
) -> bool:
    """Make `out` hold a refresh token of the agent-role client `agent` (created if
    needed) as `{"refresh_token", "obtained_at"}`, mode 0600. A file whose token stays
    valid for more than half `lifetime` is left alone. True when the file was written."""
    store = Store(db_path, clock=time.time)
    try:
        accounts = Accounts(store)
        existing = accounts.get(agent)
        if existing is not None and existing.get("role") != AGENT:
            raise AgentTokenError(f"client {agent!r} exists with role {existing.get('role')}")
        try:
            current: str | None = read_token_file(out)
        except (OSError, ValueError):
            current = None
        if existing and current and accounts.refresh_valid_for(current, agent) > lifetime / 2:
            return False
        if existing is None:
            # Nobody logs in with this secret: the refresh token is the agent's credential.
            accounts.save(agent, {"role": AGENT}, secret=new_client_secret())
        token = accounts.mint_refresh(agent, lifetime)
        if current:
            accounts.revoke(current)
        obtained = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_private(out, json.dumps({"refresh_token": token, "obtained_at": obtained}) + "\n")
        return True
    finally:
        store.close()
