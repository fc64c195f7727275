"""Server-rendered pages an operator keeps open: agents, one agent, one job, queues.

Filtering and sorting are query strings (they survive a reload, a bookmark and the
self-refresh); `static/pages.js` only keeps relative times current and reloads the page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from apiflask import APIBlueprint
from flask import Response, current_app, g, redirect, render_template, request

from multiagent.server.auth import AMC, Denied, allowed, auth_configured, caller
from multiagent.server.db import Store, valid_job_id
from multiagent.server.jobview import duration, job_end, job_name, phase_rows, when, when_iso
from multiagent.server.policy import policy
from multiagent.server.schemas import AgentsPageQuery
from multiagent.server.verdict import Verdict, of_job
from multiagent.vocabulary import (
    REMOVED_COMMENT,
    REMOVED_STATE,
    AgentState,
    JobState,
    is_drained_comment,
)

# An APIBlueprint so the pages are in the OpenAPI document (and fuzzed with the API).
bp = APIBlueprint(
    "pages",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

STALE_AFTER = 15 * 60  # an agent not heard from this long is marked stale
REFRESH_SECONDS = 30  # the Agents page reloads itself this often (keeping its query)
# A job's page and an agent's page fetch their changing part this often (no reload); a
# job's page stops once the job is over.
JOB_LIVE_SECONDS = 3
AGENT_LIVE_SECONDS = 5
QUEUE_JOBS_SHOWN = 20  # waiting jobs listed per queue on /queues, next to be taken first
FILTERS = ("state", "queue", "location")
SORT_LABELS = {
    "name": "Name",
    "state": "State",
    "location": "Location",
    "queues": "Queues",
    "job": "Job",
    "seen": "Last seen",
}
SORT_KEYS = tuple(SORT_LABELS)


def ago(now: float, ts: float) -> str:
    """'just now', '3 min ago', '5 h ago', '2 days ago' (static/pages.js says the same)."""
    seconds = max(0.0, now - ts)
    if seconds < 60:
        return "just now"
    minutes = int(seconds // 60)
    if minutes < 90:
        return f"{minutes} min ago"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h ago"
    return f"{hours // 24} days ago"


def is_stale(now: float, ts: float, limit: float = STALE_AFTER) -> bool:
    return now - ts > limit


def store() -> Store:
    return current_app.extensions["tf_store"]


def now() -> float:
    return current_app.config["TF_CLOCK"]()


def last_seen(agent: dict[str, Any]) -> float:
    """The agent's last sign of life: its last post, or its last request with its cookie."""
    heard = current_app.extensions.get("tf_seen", {}).get(agent["name"], 0.0)
    return max(agent["updated_at_ts"], heard)


def shown_state(agent: dict[str, Any]) -> str:
    """The agent's state as the pages show and count it: upstream's `offline` that
    tf-fleet set (its comment says so) is `drained` or `removed`, apart from an admin's."""
    state = agent.get("state") or "unknown"
    comment = agent.get("comment") or ""
    if state == REMOVED_STATE and comment == REMOVED_COMMENT:
        return AgentState.REMOVED
    if state == AgentState.OFFLINE and is_drained_comment(comment):
        return AgentState.DRAINED
    return state


def agent_row(agent: dict[str, Any], current: float) -> dict[str, Any]:
    seen = last_seen(agent)
    state = shown_state(agent)
    return agent | {
        "state_text": state,
        "comment_text": agent.get("comment") or "",
        "removed": state == AgentState.REMOVED,
        "seen_ts": seen,
        "seen_text": when(seen),
        "seen_ago": ago(current, seen),
        "stale": is_stale(current, seen),
        "offline": state == AgentState.OFFLINE,
        "maintenance": state == AgentState.MAINTENANCE,
        "queues_text": ", ".join(q for q in agent.get("queues") or [] if isinstance(q, str)),
        "location_text": agent.get("location") or "unknown",
    }


def _sort_key(column: str):
    keys = {
        "name": lambda r: r["name"],
        "state": lambda r: r["state_text"],
        "location": lambda r: r["location_text"],
        "queues": lambda r: r["queues_text"],
        "job": lambda r: r.get("job_id") or "",
        "seen": lambda r: r["seen_ts"],
    }
    return keys[column]


def _matches(row: dict[str, Any], chosen: dict[str, str]) -> bool:
    if chosen.get("state") and row["state_text"] != chosen["state"]:
        return False
    if chosen.get("queue") and chosen["queue"] not in (row.get("queues") or []):
        return False
    return not (chosen.get("location") and row["location_text"] != chosen["location"])


def _link(chosen: dict[str, str], **changes: str) -> str:
    query = {k: v for k, v in (chosen | changes).items() if v}
    return "/agents" + ("?" + urlencode(query) if query else "")


@bp.before_app_request
def _note_agent_seen() -> None:
    # Upstream's agent sends its `agent_name` cookie on every request once registered:
    # a cheap sign of life between its (rare) agent-data posts.
    name = request.cookies.get("agent_name")
    if name and request.path.startswith("/v1/"):
        current_app.extensions.setdefault("tf_seen", {})[name] = now()


PUBLIC = ("pages.static", "pages.index")
NEVER_PUBLIC = ("pages.job_page", "pages.job_live")  # --public-pages opens no job data


@bp.before_request
def _readers_only() -> Any:
    """The pages need credentials as the API's reads do (a shared token, or
    --require-auth): a browser sends them as HTTP Basic (it asks on the 401).
    `--public-pages` opens the agents and queues pages, never a job's page."""
    if request.endpoint in PUBLIC:
        return None
    public = policy().public_pages and request.endpoint not in NEVER_PUBLIC
    if public or not auth_configured(policy().token, current_app.extensions["tf_accounts"]):
        return None
    try:
        allowed(caller(), AMC, require_auth=policy().require_auth, read=True)
    except Denied as exc:
        body = render_template("denied.html", message=exc.message)
        resp = Response(body, status=exc.status, mimetype="text/html")
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Basic realm="tf-fleet server", charset="UTF-8"'
        return resp
    return None


def may_read_jobs() -> bool:
    """Whether this caller may see what jobs hold (names, verdicts): `--public-pages`
    opens the agents and queues pages to anyone, their jobs' data only to readers."""
    if "tf_may_read_jobs" not in g:
        g.tf_may_read_jobs = True
        if policy().public_pages and auth_configured(
            policy().token, current_app.extensions["tf_accounts"]
        ):
            try:
                allowed(caller(), AMC, require_auth=policy().require_auth, read=True)
            except Denied:
                g.tf_may_read_jobs = False
    return bool(g.tf_may_read_jobs)


def shown_name(job: dict[str, Any] | None) -> str:
    return job_name(job) if job and may_read_jobs() else ""


@bp.get("/")
def index():
    return redirect("/agents")


@bp.get("/agents")
@bp.input(AgentsPageQuery, location="query", validation=False, arg_name="args")
def agents_page(args: Any):
    current = now()
    rows = [agent_row(agent, current) for agent in store().list_agents()]
    for row in rows:
        job_id = row.get("job_id")
        job = store().get_job(job_id) if isinstance(job_id, str) and valid_job_id(job_id) else None
        row["job_name"] = shown_name(job)
    chosen = {k: args.get(k, "") for k in FILTERS}
    sort = args.get("sort", "name")
    sort = sort if sort in SORT_KEYS else "name"
    descending = args.get("dir") == "desc"
    chosen_sort = {"sort": sort if sort != "name" else "", "dir": "desc" if descending else ""}
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state_text"]] = counts.get(row["state_text"], 0) + 1
    shown = sorted(
        (r for r in rows if _matches(r, chosen)), key=_sort_key(sort), reverse=descending
    )
    headers = []
    for column, label in SORT_LABELS.items():
        flip = "desc" if column == sort and not descending else ""
        arrow = (" ▼" if descending else " ▲") if column == sort else ""
        headers.append(
            {"label": label + arrow, "href": _link(chosen, sort=column, dir=flip), "key": column}
        )
    return render_template(
        "agents.html",
        agents=shown,
        total=len(rows),
        counts=sorted(counts.items()),
        chosen=chosen,
        state_links={s: _link(chosen | chosen_sort, state=s) for s in counts},
        all_link=_link(chosen_sort, state="", queue=chosen["queue"], location=chosen["location"]),
        options={
            "state": sorted(counts),
            "queue": sorted({q for r in rows for q in (r.get("queues") or [])}),
            "location": sorted({r["location_text"] for r in rows}),
        },
        headers=headers,
        sort=sort,
        direction="desc" if descending else "",
        now_ts=current,
        now_text=when(current),
        refresh=REFRESH_SECONDS,
        stale_minutes=STALE_AFTER // 60,
    )


def not_found(what: str, back: str, back_label: str) -> tuple[str, int]:
    return render_template("not_found.html", what=what, back=back, back_label=back_label), 404


def _provision_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One outcome per entry, from its exit code: never 'provision_fail' beside exit 0."""
    rows = []
    for entry in history:
        detail = entry.get("detail") or ""
        if detail in ("provision_success", "provision_fail"):
            detail = ""
        rows.append(
            entry
            | {"passed": entry["exit_code"] == 0, "detail_text": detail, "when": when(entry["ts"])}
        )
    return rows


def _job_rows(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs as the lists show them: name beside id, verdict, times with their zone."""
    return [
        j
        | {
            "name_text": shown_name(j),
            "verdict": of_job(j) if may_read_jobs() else Verdict("", ""),
            "created_text": when(j["created_ts"]),
            "started_text": when(j["started_ts"]),
        }
        for j in jobs
    ]


def _agent_view(name: str) -> dict[str, Any] | None:
    """What the agent page shows, live part included; None for an unknown agent."""
    s = store()
    agent = s.get_agent(name, with_log=True)
    if agent is None:
        return None
    current = now()
    queues = s.advertised_queues()
    counts = s.queue_counts()
    queue_rows = [
        {"name": q, "description": queues.get(q, ""), **counts.get(q, {"waiting": 0, "running": 0})}
        for q in agent.get("queues") or []
    ]
    history = _provision_rows(s.provision_history(name))
    names: dict[str, str] = {}
    for entry in history:
        job_id = entry["job_id"]
        if job_id not in names:
            found = s.get_job(job_id) if valid_job_id(job_id) else None
            names[job_id] = shown_name(found)
        entry["name_text"] = names[job_id]
    passed = sum(1 for entry in history if entry["passed"])
    job_id = agent.get("job_id")
    current_job = s.get_job(job_id) if isinstance(job_id, str) and valid_job_id(job_id) else None
    return {
        "agent": agent_row(agent, current),
        "current_job_name": shown_name(current_job),
        "queues": queue_rows,
        "history": history,
        "success": (100 * passed // len(history)) if history else None,
        "jobs": _job_rows(s.list_jobs(agent=name, limit=20)),
        "now_ts": current,
        "now_text": when(current),
        "live_every": AGENT_LIVE_SECONDS,
    }


def _unknown_agent(name: str) -> tuple[str, int]:
    return not_found(f"No agent named {name!r} is known to this server.", "/agents", "Agents")


def _shown(view: dict[str, Any] | None, template: str, unknown: Callable[[], tuple[str, int]]):
    return unknown() if view is None else render_template(template, **view)


@bp.get("/agents/<name>")
def agent_page(name: str):
    return _shown(_agent_view(name), "agent.html", lambda: _unknown_agent(name))


@bp.get("/agents/<name>/live")
def agent_live(name: str):
    """The agent page's changing part, which the page fetches to update itself."""
    return _shown(_agent_view(name), "agent_live.html", lambda: _unknown_agent(name))


def _job_view(job_id: str) -> dict[str, Any] | None:
    """What the job page shows, live part included; None for an unknown job."""
    s = store()
    job = s.get_job(job_id) if valid_job_id(job_id) else None
    if job is None:
        return None
    end = job_end(job)
    events = [e | {"when": when_iso(e.get("timestamp"))} for e in s.get_events(job_id)]
    return {
        "job": job,
        "name": job_name(job),
        "verdict": of_job(job),
        "over": job["job_state"] in JobState.FINAL,
        "phases": phase_rows(job),
        "created": when(job["created_ts"]),
        "started": when(job["started_ts"]),
        "ended": when(end),
        "took": duration(end - job["started_ts"]) if end and job["started_ts"] else "",
        "output": "".join(e["log_data"] for e in s.get_logs(job_id, "output").values()),
        "has_artifact": s.has_blob(job_id, "artifact"),
        "events": events,
        "live_every": JOB_LIVE_SECONDS,
    }


def _unknown_job(job_id: str) -> tuple[str, int]:
    return not_found(f"No job {job_id!r} is known to this server.", "/agents", "Agents")


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):
    return _shown(_job_view(job_id), "job.html", lambda: _unknown_job(job_id))


@bp.get("/jobs/<job_id>/live")
def job_live(job_id: str):
    """The job page's changing part; the page fetches it while the job is not over."""
    return _shown(_job_view(job_id), "job_live.html", lambda: _unknown_job(job_id))


@bp.get("/queues")
def queues_page():
    s = store()
    counts = s.queue_counts()
    agents = s.list_agents()
    current = now()
    waiting = [j for j in s.list_jobs(limit=None) if j["job_state"] == JobState.WAITING]
    rows = []
    for name, description in s.all_queues().items():
        members = [a["name"] for a in agents if name in (a.get("queues") or [])]
        rows.append(
            {
                "name": name,
                "description": description,
                "agents": members,
                "waiting_jobs": _job_rows(
                    sorted(
                        (j for j in waiting if j["queue"] == name),
                        key=lambda j: (-j["priority"], j["created_ts"]),
                    )[:QUEUE_JOBS_SHOWN]
                ),
                **counts.get(name, {"waiting": 0, "running": 0}),
            }
        )
    return render_template(
        "queues.html",
        queues=rows,
        now_ts=current,
        now_text=when(current),
        shown=QUEUE_JOBS_SHOWN,
    )


@bp.app_errorhandler(404)
def page_not_found(exc: Exception) -> Any:
    if request.path.startswith("/v1"):
        # Upstream's unknown route: plain text.
        return Response(f"Not found: {request.path}\n", status=404, mimetype="text/plain")
    return not_found(f"There is no page at {request.path}.", "/agents", "Agents")
