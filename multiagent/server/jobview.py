"""What the pages show of a job, from its stored row alone: each phase's start, end and
duration, when the job ended, and the times of its events. Pure: no Flask, no store."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from multiagent.server.db import PHASE_ENDS, TIMELINE
from multiagent.vocabulary import JobState, Phase


def when(ts: float | None) -> str:
    """The one time format of every page."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def when_iso(text: object) -> str:
    """An ISO 8601 time an agent sent (an event's), in the pages' format; as sent if it
    is no such time."""
    if not isinstance(text, str):
        return ""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # upstream's agents send UTC
    return when(parsed.timestamp())


def duration(seconds: float | None) -> str:
    """'0.4 s', '1 s', '9.5 s', '3 min 20 s', '3 h 05 min': tenths only below 10 s, so
    a phase of about a second reads as one, not as zero."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 9.95:
        return f"{seconds:.1f}".removesuffix(".0") + " s"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def phase_rows(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Each phase that began or has a status: start, end, duration, exit code or what
    else it is (running, skipped), in run order. A phase ends when its exit code came
    (or the next state began, if sooner); cleanup, which no job state announces, begins
    when the phase before it ended."""
    result = job["result_data"]
    status = result.get("status") or {}
    timeline: dict[str, float] = result.get(TIMELINE) or {}
    ends: dict[str, float] = result.get(PHASE_ENDS) or {}
    marks = sorted(timeline.items(), key=lambda item: item[1])
    rows = []
    previous_end: float | None = None
    for phase in Phase.ALL:
        start = timeline.get(phase)
        if start is None and phase not in status:
            continue
        code = status.get(phase)
        if start is None and phase == Phase.CLEANUP:
            start = previous_end
        # Its exit code's arrival, unless the next state came first (an agent that
        # posts every exit code at the end).
        found = [ends[phase]] if phase in ends else []
        if start is not None:
            later = (ts for state, ts in marks if ts > start and state != phase)
            found += [ts for ts in [next(later, None)] if ts is not None]
        end = min(found) if found else None
        if code is not None:
            outcome = "pass" if code == 0 else "fail"
        elif job["job_state"] == phase:
            outcome = "running"
        else:
            outcome = "skipped"
        over = end is not None and outcome != "running"
        rows.append(
            {
                "name": phase,
                "code": code,
                "outcome": outcome,
                "start": when(start),
                "end": when(end) if over else "",
                "duration": duration(end - start) if over and start and end else "",
            }
        )
        previous_end = end if over else previous_end
    return rows


def job_end(job: dict[str, Any]) -> float | None:
    timeline = job["result_data"].get(TIMELINE) or {}
    ends = [timeline[s] for s in JobState.FINAL if s in timeline]
    return min(ends) if ends and job["job_state"] in JobState.FINAL else None


def job_name(job: dict[str, Any]) -> str:
    name = job["job_data"].get("name")
    return name if isinstance(name, str) else ""
