"""Deliver a finished job's outcome (log fragments, artifacts, final result) exactly once.

If the server cannot take it, the whole rundir moves to results_basedir (as
upstream) and is re-sent later. Each piece is deleted from disk as soon as the
server has it, so a partial success never sends anything twice.
"""

from __future__ import annotations

import os

from multiagent import jsonio
from multiagent.agent.client import Client, ServerUnreachable
from multiagent.agent.log import get as get_logger

log = get_logger("tf-agent.outcome")
_warned: set[str] = set()

OUTCOME_FILE = "testflinger-outcome.json"
FRAGMENTS_FILE = "tf-agent-unsent-logs.jsonl"
ARTIFACT_FILE = "tf-agent-artifacts.tar.gz"


def build_artifact(rundir: str) -> bool:
    """Tar `rundir/artifacts/` (one top-level entry `artifacts/`) if it has anything in it.
    Raises OSError (a full disk, an unreadable file) with nothing half-written left."""
    src = os.path.join(rundir, "artifacts")
    if not os.path.isdir(src) or os.path.islink(src) or not os.listdir(src):
        return False
    import tarfile  # per job only

    tmp = os.path.join(rundir, ARTIFACT_FILE + ".tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(src, arcname="artifacts")
        os.replace(tmp, os.path.join(rundir, ARTIFACT_FILE))
    except OSError:
        try:
            os.unlink(tmp)  # half a tarball is no artifact (and holds the full disk's space)
        except OSError:
            pass
        raise
    import shutil  # per job only, like tarfile

    shutil.rmtree(src, ignore_errors=True)
    return True


def save_fragments(rundir: str, fragments: list[tuple[str, dict]]) -> None:
    path = os.path.join(rundir, FRAGMENTS_FILE)
    if not fragments:
        if os.path.exists(path):
            os.unlink(path)
        return
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        for log_type, fragment in fragments:
            fh.write(jsonio.dumps([log_type, fragment]) + "\n")
    os.replace(path + ".tmp", path)


def load_fragments(rundir: str) -> list[tuple[str, dict]]:
    path = os.path.join(rundir, FRAGMENTS_FILE)
    fragments: list[tuple[str, dict]] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    log_type, fragment = jsonio.loads(line)
                    fragments.append((log_type, fragment))
    except (OSError, ValueError, TypeError):
        return []
    return fragments


def write_outcome(rundir: str, outcome: dict) -> None:
    path = os.path.join(rundir, OUTCOME_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        jsonio.dump(outcome, fh)
    os.replace(path + ".tmp", path)


def update_outcome(rundir: str, updates: dict) -> dict:
    """Read-modify-write of the outcome file, as upstream: keys a connector wrote in it
    (`device_info`) stay. Returns what the file holds now."""
    path = os.path.join(rundir, OUTCOME_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            current = jsonio.load(fh)
    except (OSError, ValueError):
        current = None
    if not isinstance(current, dict):
        current = {}
    current.update(updates)
    write_outcome(rundir, current)
    return current


def phase_result(outcome: dict) -> dict:
    """What a phase's end posts: the statuses, and the connector's device_info if it wrote
    one (the one extra key the result schema takes; any other would refuse the post)."""
    result = {"status": outcome.get("status", {})}
    if isinstance(outcome.get("device_info"), dict):
        result["device_info"] = outcome["device_info"]
    return result


def transmit(client: Client, rundir: str, job_id: str, timeout: float | None = None) -> None:
    """Send what is left in rundir, then remove it. Raises ServerUnreachable to retry later."""
    fragments = load_fragments(rundir)
    for index, (log_type, fragment) in enumerate(fragments):
        try:
            client.post_log(job_id, log_type, fragment)
        except ServerUnreachable:
            save_fragments(rundir, fragments[index:])
            raise
    save_fragments(rundir, [])

    artifact = os.path.join(rundir, ARTIFACT_FILE)
    if os.path.exists(artifact):
        resp = client.upload_artifact(job_id, artifact)
        if not resp.ok:
            # A 4xx will not get better by retrying; keep the outcome moving.
            log.error(
                "artifact upload for %s refused: HTTP %s %s", job_id, resp.status, resp.body[:200]
            )
        os.unlink(artifact)

    outcome_path = os.path.join(rundir, OUTCOME_FILE)
    if os.path.exists(outcome_path):
        with open(outcome_path, encoding="utf-8") as fh:
            outcome = jsonio.load(fh)
        result = phase_result(outcome)
        if "job_state" in outcome:
            result["job_state"] = outcome["job_state"]
        if not client.post_result(job_id, result, timeout=timeout):
            log.error("final result for %s refused; dropping it", job_id)
        os.unlink(outcome_path)
    import shutil  # per job only: bz2/lzma come with it

    shutil.rmtree(rundir, ignore_errors=True)


def store(rundir: str, results_basedir: str, job_id: str) -> str:
    import shutil  # per job only

    os.makedirs(results_basedir, exist_ok=True)
    dest = os.path.join(results_basedir, job_id)
    if os.path.exists(dest):
        shutil.rmtree(dest, ignore_errors=True)
    shutil.move(rundir, dest)
    log.warning("outcome of job %s kept in %s until the server is back", job_id, dest)
    return dest


def pending(results_basedir: str) -> list[str]:
    try:
        return sorted(
            e.name for e in os.scandir(results_basedir) if e.is_dir() and not e.name.startswith(".")
        )
    except OSError:
        return []


def retry_stored(client: Client, results_basedir: str) -> int:
    """Re-send stored outcomes; returns how many were delivered. Stops if the server is down."""
    delivered = 0
    for job_id in pending(results_basedir):
        rundir = os.path.join(results_basedir, job_id)
        if not (
            os.path.exists(os.path.join(rundir, "testflinger.json"))
            or os.path.exists(os.path.join(rundir, OUTCOME_FILE))
        ):
            if rundir not in _warned:
                _warned.add(rundir)
                log.warning("%s has no testflinger.json; leaving it alone", rundir)
            continue
        transmit(client, rundir, job_id)
        log.info("delivered stored outcome of job %s", job_id)
        delivered += 1
    return delivered
