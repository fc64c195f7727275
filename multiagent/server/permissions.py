"""Upstream's checks of a submitted job against the caller's limits (read from the token).

In order: a non-zero `job_priority`, a restricted queue, a `reserve_data.timeout` above
six hours. An anonymous caller gets 401 for each, a client above its limit 403.
"""

from __future__ import annotations

from typing import Any

from multiagent.server.auth import Principal
from multiagent.server.jobschema import reservation_seconds

DEFAULT_RESERVATION = 3600
FREE_RESERVATION = 21600  # longer reservations need `max_reservation_time`


def _limit(table: Any, queue: str) -> int:
    if not isinstance(table, dict):
        return 0
    values = [table.get("*", 0), table.get(queue, 0)]
    return max(v for v in values if isinstance(v, int)) if values else 0


def submit_denied(
    principal: Principal, job: dict[str, Any], restricted: set[str]
) -> tuple[int, str] | None:
    if principal.everything:
        return None
    checks = (_priority, _restricted, _reservation)
    for check in checks:
        if (denied := check(principal, job, restricted)) is not None:
            return denied
    return None


def _priority(principal: Principal, job: dict[str, Any], _: set[str]) -> tuple[int, str] | None:
    priority = job.get("job_priority", 0)
    if priority == 0:  # upstream asks about any other, negative too
        return None
    return _within(principal, job, "max_priority", priority, "priority")


def _restricted(
    principal: Principal, job: dict[str, Any], restricted: set[str]
) -> tuple[int, str] | None:
    queue = job["job_queue"]
    if queue not in restricted:
        return None
    if principal.anonymous:
        return 401, f"Authentication required to push to restricted queue: {queue}"
    if queue not in (principal.permissions.get("allowed_queues") or []):
        return 403, f"Not enough permissions to push to the restricted queue: {queue}"
    return None


def _reservation(principal: Principal, job: dict[str, Any], _: set[str]) -> tuple[int, str] | None:
    reserve = job.get("reserve_data") or {}
    timeout = reservation_seconds(reserve.get("timeout", DEFAULT_RESERVATION)) or 0
    if timeout <= FREE_RESERVATION:
        return None
    return _within(principal, job, "max_reservation_time", timeout, "timeout")


# Upstream's words for each bounded value: (asked, over the limit).
_WORDS = {
    "priority": ("for setting priority: {}", "with priority {}"),
    "timeout": ("for setting timeout: {}", "with reservation timeout {}"),
}


def _within(
    principal: Principal, job: dict[str, Any], limit_key: str, value: int, what: str
) -> tuple[int, str] | None:
    """Upstream's answers to a value beyond what anyone may ask: 401 without a token, 403
    above the client's limit for the job's queue."""
    asked, over = (words.format(value) for words in _WORDS[what])
    if principal.anonymous:
        return 401, f"Authentication required {asked}"
    queue = job["job_queue"]
    if value > _limit(principal.permissions.get(limit_key), queue):
        return 403, f"Not enough permissions to push to {queue} {over}"
    return None
