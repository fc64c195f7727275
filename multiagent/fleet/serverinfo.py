"""What tf-fleet reads from the agents' server: whether it answers, and what it says of
agents (upstream agents write no status file; the server knows their state and job)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reachability:
    ok: bool
    text: str  # "HTTP 200 in 3 ms", or the error


def _get(url: str, timeout: float) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def probe(server_url: str, timeout: float = 2.0) -> Reachability:
    import urllib.error
    import urllib.request

    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"{server_url}/v1", timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Reachability(False, f"unreachable ({reason})")
    took = (time.monotonic() - started) * 1000
    return Reachability(status < 500, f"HTTP {status} in {took:.0f} ms")


def server_agent(server_url: str, name: str) -> dict[str, Any]:
    """The server's record of one agent; {} when it has none or cannot be asked."""
    try:
        data = _get(f"{server_url}/v1/agents/data/{name}", 2.0)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def server_agents(server_url: str) -> dict[str, dict[str, Any]] | str:
    """Every agent the server knows, by name, in one request; or why not, in words."""
    try:
        data = _get(f"{server_url}/v1/agents/data", 3.0)
    except (OSError, ValueError) as exc:
        return f"cannot list agents on {server_url}: {getattr(exc, 'reason', exc)}"
    if not isinstance(data, list):
        return f"{server_url} answered no list of agents"
    return {a["name"]: a for a in data if isinstance(a, dict) and isinstance(a.get("name"), str)}
