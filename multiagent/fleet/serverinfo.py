"""What tf-fleet reads from the agents' server: whether it answers, and what it says of
agents (upstream agents write no status file; the server knows their state and job).
The requests are ServerClient's; here is what their answers mean to a command."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from multiagent.fleet.serverclient import LOOK_TIMEOUT, ServerClient, ServerError, Unreachable


@dataclass(frozen=True)
class Reachability:
    ok: bool
    text: str  # "HTTP 200 in 3 ms", or the error


def probe(server_url: str, timeout: float = LOOK_TIMEOUT) -> Reachability:
    started = time.monotonic()
    try:
        status = ServerClient(server_url).request("GET", "/v1", timeout=timeout).status
    except Unreachable as exc:
        return Reachability(False, str(exc.reason))
    took = (time.monotonic() - started) * 1000
    return Reachability(status < 500, f"HTTP {status} in {took:.0f} ms")


def server_agent(server_url: str, name: str) -> dict[str, Any]:
    """The server's record of one agent; {} when it has none or cannot be asked."""
    try:
        data = ServerClient(server_url).agent(name)
    except (ServerError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def agent_job(
    server_url: str, name: str, token_file: str | None = None
) -> tuple[str | None, str | None]:
    """The job the server holds for agent `name` (None: none), and None; or None and why
    the server could not say (unreachable, refused, an answer that is no agent record).
    A server that knows no such agent holds no job for it. `token_file`: the agent's own
    credential, for a server that lets only clients read."""
    try:
        client = ServerClient.with_token_file(server_url, token_file, LOOK_TIMEOUT)
        resp = client.request("GET", f"/v1/agents/data/{name}", timeout=LOOK_TIMEOUT)
        if resp.status == 404:
            return None, None
        if resp.status != 200:
            return None, f"{server_url} answered HTTP {resp.status}"
        data = resp.json()
    except Unreachable as exc:
        return None, f"{server_url} is unreachable ({exc.reason})"
    except ServerError as exc:
        return None, str(exc)
    except ValueError:
        return None, f"{server_url} answered no JSON"
    if not isinstance(data, dict):
        return None, f"{server_url} answered no agent record"
    job_id = data.get("job_id")
    return (job_id if isinstance(job_id, str) and job_id else None), None


def server_agents(server_url: str) -> dict[str, dict[str, Any]] | str:
    """Every agent the server knows, by name, in one request; or why not, in words."""
    try:
        data = ServerClient(server_url).agents()
    except Unreachable as exc:
        return f"cannot list agents on {server_url}: {exc.reason}"
    except (ServerError, ValueError) as exc:
        return f"cannot list agents on {server_url}: {exc}"
    if not isinstance(data, list):
        return f"{server_url} answered no list of agents"
    return {a["name"]: a for a in data if isinstance(a, dict) and isinstance(a.get("name"), str)}
