"""A job's verdict in one word and one line, from its state and its phases' exit codes:
what the pages show beside every job (upstream leaves reading the codes to the user)."""

from __future__ import annotations

from typing import Any, NamedTuple

from multiagent.server.db import TIMELINE
from multiagent.vocabulary import JobState, Phase, PhaseStatus


class Verdict(NamedTuple):
    kind: str  # one of KINDS: the pages' CSS class and what a test reads
    text: str


PASSED, FAILED, CANCELLED, AGENT_ERROR, NO_RESULT = (
    "passed",
    "failed",
    "cancelled",
    "agent-error",
    "no-result",
)
WAITING, RUNNING = "waiting", "running"
KINDS = (PASSED, FAILED, CANCELLED, AGENT_ERROR, NO_RESULT, WAITING, RUNNING)


def verdict(job_state: str, status: dict[str, Any], reached: str = "") -> Verdict:
    """The first phase that did not exit 0 decides: `failed in test (exit 3)`, or an
    agent error there (tf-agent's own failure, not the device's); a job with every phase
    at 0 passed. A job not over yet has none: it is waiting or running. `reached`: the
    last phase the job began, which a cancel names."""
    if job_state == JobState.CANCELLED:
        return Verdict(CANCELLED, f"cancelled in {reached}" if reached else "cancelled")
    if job_state not in JobState.FINAL:
        if job_state == JobState.WAITING:
            return Verdict(WAITING, "waiting")
        return Verdict(RUNNING, f"running ({job_state})")
    for phase in Phase.ALL:
        code = status.get(phase)
        if code is None or code == 0:
            continue
        if code == PhaseStatus.AGENT_ERROR:
            return Verdict(AGENT_ERROR, f"agent error in {phase}")
        if code == PhaseStatus.RECOVERY_FAILED:
            return Verdict(FAILED, f"failed in {phase} (exit {code}: device not recovered)")
        return Verdict(FAILED, f"failed in {phase} (exit {code})")
    if not status:
        return Verdict(NO_RESULT, "ended with no phase reported")
    return Verdict(PASSED, "passed")


def of_job(job: dict[str, Any]) -> Verdict:
    result = job["result_data"]
    status = result.get("status")
    timeline = result.get(TIMELINE) or {}
    begun = [phase for phase in Phase.ALL if phase in timeline]
    return verdict(
        job["job_state"], status if isinstance(status, dict) else {}, begun[-1] if begun else ""
    )
