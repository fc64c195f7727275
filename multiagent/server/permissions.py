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
    if priority == 0:
        return None
    return _within(
        principal,
        priority,
        _limit(principal.permissions.get("max_priority"), job["job_queue"]),
        f"for setting priority: {priority}",
        f"with priority {priority}",
        job["job_queue"],
    )


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
    return _within(
        principal,
        timeout,
        _limit(principal.permissions.get("max_reservation_time"), job["job_queue"]),
        f"for setting timeout: {timeout}",
        f"with reservation timeout {timeout}",
        job["job_queue"],
    )


def _within(
    principal: Principal, value: int, limit: int, asked: str, over: str, queue: str
) -> tuple[int, str] | None:
    """Upstream's answers to a value that needs a limit: 401 without a token, 403 above it."""
    if principal.anonymous:
        return 401, f"Authentication required {asked}"
    if value > limit:
        return 403, f"Not enough permissions to push to {queue} {over}"
    return None
