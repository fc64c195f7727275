"""Client side of `tf-fleet submit`: pack attachments, post the job, follow it."""

from __future__ import annotations

import copy
import io
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
