"""Client side of `tf-fleet submit`: pack attachments, post the job, follow it."""

from __future__ import annotations

import copy
import io
import tarfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import requests

from multiagent.fleet.errors import ExitStatus
from multiagent.vocabulary import JobState, Phase


class SubmitError(Exception):
    pass


def _agent_path(entry: dict[str, Any], local: Path) -> PurePosixPath:
    agent = PurePosixPath(entry.get("agent") or local.name)
    if agent.is_absolute() or ".." in agent.parts:
        raise SubmitError(f"attachment path {str(agent)!r} must be relative, without '..'")
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
                    raise SubmitError(f"{phase}_data.attachments: each entry needs `agent`")
                local = Path(entry.pop("local", None) or entry["agent"]).expanduser()
                if not local.is_absolute():
                    local = base_dir / local
                if not local.exists():
                    raise SubmitError(f"attachment {local} does not exist")
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


class Client:
    def __init__(self, server: str, token: str | None = None, timeout: float = 30) -> None:
        self.server = server.rstrip("/")
        if "://" not in self.server:
            self.server = "http://" + self.server
        self.session = requests.Session()
        self.timeout = timeout
        if token:
            self.session.headers["Authorization"] = f"Bearer {self.access_token(token)}"

    def access_token(self, token: str) -> str:
        """A token file holds a refresh token (an agent's or a client's) or the server's
        shared token: exchange it as upstream's agent does; the shared one comes back as is."""
        try:
            resp = self.session.post(
                self.url("/v1/oauth2/refresh"), json={"refresh_token": token}, timeout=self.timeout
            )
        except requests.RequestException:
            return token
        if resp.status_code == 200:
            return str(resp.json().get("access_token") or token)
        return token

    def url(self, path: str) -> str:
        return self.server + path

    def submit(self, job: dict[str, Any], archive: bytes | None) -> str:
        resp = self.session.post(self.url("/v1/job"), json=job, timeout=self.timeout)
        if resp.status_code != 200:
            raise SubmitError(f"submit failed: HTTP {resp.status_code}: {resp.text.strip()}")
        job_id = resp.json()["job_id"]
        if archive is not None:
            files = {"file": ("attachments.tar.gz", archive, "application/gzip")}
            resp = self.session.post(
                self.url(f"/v1/job/{job_id}/attachments"), files=files, timeout=600
            )
            if resp.status_code != 200:
                raise SubmitError(
                    f"attachment upload failed: HTTP {resp.status_code}: {resp.text.strip()}"
                )
        return job_id

    def result(self, job_id: str) -> dict[str, Any] | None:
        resp = self.session.get(self.url(f"/v1/result/{job_id}"), timeout=self.timeout)
        if resp.status_code == 204:
            return None
        resp.raise_for_status()
        return resp.json()

    def output_since(self, job_id: str, start: int) -> tuple[str, int]:
        """New output text from fragment `start` on, and the next fragment number."""
        resp = self.session.get(
            self.url(f"/v1/result/{job_id}/log/output"),
            params={"start_fragment": start},
            timeout=self.timeout,
        )
        resp.raise_for_status()
        phases = resp.json().get("output", {})
        text = "".join(entry["log_data"] for entry in phases.values())
        last = max((entry["last_fragment_number"] for entry in phases.values()), default=-1)
        return text, max(start, last + 1)


def follow(
    client: Client,
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
