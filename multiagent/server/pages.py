"""Server-rendered HTML pages: agents, one agent, one job, queues. No JavaScript."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, abort, current_app, redirect, render_template

from multiagent.vocabulary import ALL_PHASES

from .db import Store, valid_job_id

bp = Blueprint("pages", __name__, template_folder="templates")

STALE_AFTER = 15 * 60  # an agent silent this long is marked stale on the Agents page


def utc_text(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def ago(now: float, ts: float) -> str:
    """Coarse age for humans: minutes up to two hours, then hours, then days."""
    seconds = max(0.0, now - ts)
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} minute{'' if minutes == 1 else 's'} ago"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} hours ago"
    return f"{hours // 24} days ago"


def is_stale(now: float, ts: float, limit: float = STALE_AFTER) -> bool:
    return now - ts > limit


def store() -> Store:
    return current_app.extensions["tf_store"]


def now() -> float:
    return current_app.config["TF_CLOCK"]()


def agent_row(agent: dict[str, Any], current: float) -> dict[str, Any]:
    ts = agent["updated_at_ts"]
    return agent | {
        "updated_text": utc_text(ts),
        "updated_ago": ago(current, ts),
        "stale": is_stale(current, ts),
    }


@bp.get("/")
def index():
    return redirect("/agents")


@bp.get("/agents")
def agents_page():
    current = now()
    rows = [agent_row(agent, current) for agent in store().list_agents()]
    return render_template("agents.html", agents=rows, now_text=utc_text(current))


@bp.get("/agents/<name>")
def agent_page(name: str):
    s = store()
    agent = s.get_agent(name, with_log=True)
    if agent is None:
        abort(404)
    current = now()
    queues = s.advertised_queues()
    counts = s.queue_counts()
    queue_rows = [
        {"name": q, "description": queues.get(q, ""), **counts.get(q, {"waiting": 0, "running": 0})}
        for q in agent.get("queues") or []
    ]
    history = s.provision_history(name)
    passed = sum(1 for entry in history if entry["exit_code"] == 0)
    return render_template(
        "agent.html",
        agent=agent_row(agent, current),
        queues=queue_rows,
        history=history,
        success=(100 * passed // len(history)) if history else None,
        jobs=s.list_jobs(agent=name, limit=20),
    )


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):
    if not valid_job_id(job_id):
        abort(404)
    s = store()
    job = s.get_job(job_id)
    if job is None:
        abort(404)
    status = job["result_data"].get("status") or {}
    phases = [{"name": p, "status": status.get(p)} for p in ALL_PHASES if p in status]
    output = "".join(e["log_data"] for e in s.get_logs(job_id, "output").values())
    return render_template(
        "job.html",
        job=job,
        phases=phases,
        output=output,
        has_artifact=s.has_blob(job_id, "artifact"),
        events=s.get_events(job_id),
    )


@bp.get("/queues")
def queues_page():
    s = store()
    counts = s.queue_counts()
    agents = s.list_agents()
    rows = []
    for name, description in s.all_queues().items():
        members = [a["name"] for a in agents if name in (a.get("queues") or [])]
        rows.append(
            {
                "name": name,
                "description": description,
                "agents": members,
                **counts.get(name, {"waiting": 0, "running": 0}),
            }
        )
    return render_template("queues.html", queues=rows)
