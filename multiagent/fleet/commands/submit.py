"""Client side of `tf-fleet submit`: pack attachments, post the job, follow it."""

from __future__ import annotations

import copy
import io
import json
import tarfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from multiagent.fleet.errors import ExitStatus
from multiagent.fleet.serverclient import ServerClient, ServerError
from multiagent.vocabulary import JobState, Phase

# The server's command line imports these by the names they had before the one client.


def _agent_path(entry: dict[str, Any], local: Path) -> PurePosixPath:
    agent = PurePosixPath(entry.get("agent") or local.name)
    if agent.is_absolute() or ".." in agent.parts:
        raise ServerError(f"attachment path {str(agent)!r} must be relative, without '..'")
    return agent


def pack_attachments(job: dict[str, Any], base_dir: Path) -> tuple[dict[str, Any], bytes | None]:
    """Return the job as the server should see it, plus a tar.gz of its attachments.

    Each entry `{local?, agent, device?}` is read from `local` (or `agent`) relative to the
    job file and stored as `<phase>/<agent>`, the layout the agent unpacks. `local` is
    dropped from the posted job, as upstream's CLI does.
    """
    job = copy.deepcopy(job)
    buf = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for phase in Phase.WITH_ATTACHMENTS:
            data = job.get(f"{phase}_data")
            if not isinstance(data, dict) or not data.get("attachments"):
                continue
            for entry in data["attachments"]:
                if not isinstance(entry, dict) or not (entry.get("local") or entry.get("agent")):
                    raise ServerError(f"{phase}_data.attachments: each entry needs `agent`")
                local = Path(entry.pop("local", None) or entry["agent"]).expanduser()
                if not local.is_absolute():
                    local = base_dir / local
                if not local.exists():
                    raise ServerError(f"attachment {local} does not exist")
                agent = _agent_path(entry, local)
                entry["agent"] = str(agent)
                tar.add(local, arcname=str(PurePosixPath(phase) / agent))
                count += 1
    return job, (buf.getvalue() if count else None)


def exit_code(result: dict[str, Any]) -> int:
    """OK when the job completed and every phase that ran exited 0, else FAILED."""
    if result.get("job_state") == JobState.CANCELLED:
        return ExitStatus.FAILED
    codes = [v for k, v in result.items() if k.endswith("_status")]
    return ExitStatus.OK if all(code == 0 for code in codes) else ExitStatus.FAILED


def follow(
    client: ServerClient,
    job_id: str,
    echo: Callable[[str], None],
    *,
    interval: float = 2.0,
    timeout: float | None = None,
) -> int:
    """Print state changes and output until the job ends; return the exit code."""
    deadline = None if timeout is None else time.monotonic() + timeout
    state: str | None = None
    next_fragment = 0
    while True:
        result = client.result(job_id)
        if result is None:
            echo(f"job {job_id} is gone from the server")
            return ExitStatus.FAILED
        if result.get("job_state") != state:
            state = result.get("job_state")
            echo(f"--- job {job_id}: {state}")
        text, next_fragment = client.output_since(job_id, next_fragment)
        if text:
            echo(text.rstrip("\n"))
        if state in JobState.FINAL:
            # The agent posts the last fragments before its final state; read them once more.
            text, next_fragment = client.output_since(job_id, next_fragment)
            if text:
                echo(text.rstrip("\n"))
            for phase in Phase.ALL:
                if f"{phase}_status" in result:
                    echo(f"{phase}: exit {result[f'{phase}_status']}")
            return exit_code(result)
        if deadline is not None and time.monotonic() > deadline:
            echo(f"gave up waiting for job {job_id} (state {state})")
            return ExitStatus.FAILED
        time.sleep(interval)


def server_url_problem(server: str) -> str | None:
    """Why `server` is no server URL, or None: a bare word would be taken for a host."""
    import urllib.parse

    if "://" not in server:
        host, _, port = server.partition(":")
        if not host or not port.isdigit():
            return f"{server!r} is not a URL: give http://HOST:PORT (or HOST:PORT)"
        return None
    parts = urllib.parse.urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{server!r} is not an http(s) URL: give http://HOST:PORT"
    return None


def _reasons(detail: Any, path: str = "") -> list[str]:
    """`field: reason` for each reason in a schema failure's nested detail."""
    if isinstance(detail, dict):
        found = []
        for key, value in detail.items():
            inner = path if key in ("_schema", "json") else f"{path}.{key}" if path else str(key)
            found += _reasons(value, inner)
        return found
    if isinstance(detail, list):
        return [line for item in detail for line in _reasons(item, path)]
    return [f"{path or '(job)'}: {detail}"]


def refusal_lines(status: int, body: str, job: dict[str, Any], client: ServerClient) -> list[str]:
    """A refused submit in words: each field and its reason, and what to do about it."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return [f"error: the server refused the job (HTTP {status}): {body.strip()[:300]}"]
    reasons = _reasons(data.get("detail") or {}) or [str(data.get("message") or body.strip())]
    lines = [f"error: the server refused the job (HTTP {status}):"]
    lines += [f"  {reason}" for reason in reasons]
    if any(r.startswith("provision_data") for r in reasons):
        lines += _provision_hint(job, client)
    return lines


def _provision_hint(job: dict[str, Any], client: ServerClient) -> list[str]:
    """The provision schemas the queue's agents take (by their provision_type, where the
    server knows it), else all of them; and the server's way out for home-made ones."""
    from multiagent.server.provision import DEVICE_SCHEMAS  # only on this error

    queue = str(job.get("job_queue") or "")
    try:
        types = {str(a.get("provision_type")) for a in client.queue_agents(queue)}
    except ServerError:
        types = set()
    known = sorted(t for t in types if t in DEVICE_SCHEMAS)

    def keys(name: str) -> str:
        fields = DEVICE_SCHEMAS[name]().fields
        shown = [f"{k}{'*' if f.required else ''}" for k, f in fields.items()]
        return f"{name} ({', '.join(shown) or 'no keys'})"

    if known:
        said = [f"  queue {queue!r} is served by {', '.join(known)}; provision_data takes:"]
        said += [f"    {keys(name)}" for name in known]
    else:
        said = ["  provision_data must load as one device schema (* required):"]
        said += [f"    {keys(name)}" for name in DEVICE_SCHEMAS]
    return [
        *said,
        "  a home-made connector's own data: start the local server with"
        " --any-provision-data (`tf-fleet server --any-provision-data`)",
    ]


def queue_warning(client: ServerClient, queue: str) -> str | None:
    """A warning when no agent the server knows serves `queue`: the job would wait."""
    try:
        served = client.queue_agents(queue)
    except ServerError:
        return None
    if served:
        return None
    return (
        f"warning: no agent serves queue {queue!r} on {client.server}; the job waits until"
        " one does (`tf-fleet status` lists the agents and their queues)"
    )
