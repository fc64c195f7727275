"""An agent name another host may already run: the fleet's server saw an agent of that
name recently, while no process of this fleet runs it and this fleet's own agent of that
name has been quiet since. Two agents of one name take each other's jobs and overwrite
each other's state on the server, so `plan` and `up` say so (and, with the fleet file's
`duplicate_names: refuse`, `up` refuses before writing anything).

The server records no host or address of an agent (neither upstream's nor ours), so
"seen from another host" is read from times: when the server last heard the name, and
when this fleet's agent of that name last wrote its status file.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from multiagent.fleet.errors import UserError
from multiagent.fleet.model.fleetfile import Fleet
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.serverinfo import server_agents

# How recent a server's word of an agent must be to count as another host's live agent.
SEEN_WITHIN = 600.0
# How much later than our agent's last status write the server's word may be and still be
# that same agent's (its last post on the way out).
OWN_SLACK = 30.0


class DuplicateNameError(UserError):
    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.found = lines

    def lines(self) -> list[str]:
        return [f"error: {line}" for line in self.found] + [
            "nothing was written: rename the agent, or stop it on the other host"
            " (`duplicate_names: warn` in the fleet file only warns)"
        ]


def _seen(record: dict[str, Any]) -> float | None:
    text = record.get("updated_at")
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.rstrip("Z"))
    except ValueError:
        return None
    return when.replace(tzinfo=when.tzinfo or timezone.utc).timestamp()


def _own_last_write(layout: Layout, name: str) -> float | None:
    try:
        return layout.status_file(name).stat().st_mtime
    except OSError:
        return None


def seen_elsewhere(fleet: Fleet, names: list[str], now: float | None = None) -> list[str]:
    """One line per agent of `names` (none runs under this fleet now) that the fleet's
    server heard recently, and not last from this fleet's own agent. An embedded server
    is this fleet's alone; a server out of reach tells nothing (`up` says so elsewhere)."""
    if fleet.server.embedded or not names:
        return []
    known = server_agents(fleet.server.url)
    if isinstance(known, str):
        return []
    now = time.time() if now is None else now
    layout = Layout(fleet.state_dir)
    found = []
    for name in names:
        record = known.get(name)
        seen = _seen(record) if record else None
        if record is None or seen is None or now - seen > SEEN_WITHIN:
            continue
        own = _own_last_write(layout, name)
        if own is not None and seen <= own + OWN_SLACK:
            continue  # the last word the server had was this fleet's own agent's
        where = f", location {record['location']}" if record.get("location") else ""
        found.append(
            f"agent {name!r}: {fleet.server.url} heard an agent of this name"
            f" {now - seen:.0f} s ago (state {record.get('state') or 'unknown'}{where}),"
            " and no process of this fleet runs it: another host may run an agent of"
            " this name"
        )
    return found
