"""SQLite storage for the local server: one file, WAL, a connection per thread.

All times are epoch seconds from the injected clock, so tests can move time. Expired rows
are filtered on every read (never visible after their deadline) and deleted by `sweep()`.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from multiagent.vocabulary import JobState, Phase

DAY = 86400.0
JOB_TTL = 7 * DAY  # upstream TTL index on jobs.created_at (and logs, GridFS, queues)
TIMELINE = "_timeline"  # result_data key: {state: epoch seconds it began}; never served
PHASE_ENDS = "_ends"  # result_data key: {phase: epoch seconds its exit code came}; never served
WAIT_TIMES_KEEP = 90 * DAY  # queue wait times feed /v1/queues/wait_times
AGENT_LOG_KEEP = 100
PROVISION_LOG_KEEP = 100
_FINAL_MARKS = ", ".join("?" * len(JobState.FINAL))
# Upstream's order of a job's states; a state only moves to one of the same rank or later
# (or to cancelled), so a result post cannot hand a job out again or reopen it.
_ORDER = JobState.ORDER
STATE_RANK = {state: rank for rank, state in enumerate(_ORDER)}
STATE_RANK.update({JobState.COMPLETE: len(_ORDER), JobState.COMPLETED: len(_ORDER)})
JOB_STATES = (*STATE_RANK, JobState.CANCELLED)
SERVER_EVENT = "server_event"  # an events row the server wrote itself (not an agent's list)
# Jobs handed out whose agent has started no phase yet.
_HANDED_SQL = f"SELECT * FROM jobs WHERE state = '{JobState.RUNNING}'"
HOLDER_SHARED = "*"  # `jobs.holder` of a job popped with the shared token
_ADDED_JOB_COLUMNS = {
    "holder": "TEXT",
    "submitter": "TEXT",
    "upload_key": "TEXT",
    "acked": "INTEGER NOT NULL DEFAULT 1",
}
TAKEN_BACK = "job_taken_back"  # the server's event when a hand-out was never started
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    doc TEXT NOT NULL DEFAULT '{}',
    log TEXT NOT NULL DEFAULT '[]',
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS agents_updated ON agents(updated_at);
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    description TEXT,
    images TEXT,
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    attachments_status TEXT,
    exclude_agents TEXT NOT NULL DEFAULT '[]',
    job_data TEXT NOT NULL,
    result_data TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    started_at REAL,
    agent TEXT,
    holder TEXT,                   -- the client that popped it (HOLDER_SHARED, NULL: open)
    submitter TEXT,                -- the client that submitted it (HOLDER_SHARED, NULL: none)
    upload_key TEXT,               -- sha256 of the job's upload credential (attachments)
    acked INTEGER NOT NULL DEFAULT 1  -- 0: handed out, its agent has not answered yet
);
CREATE INDEX IF NOT EXISTS jobs_pop ON jobs(state, queue, priority DESC, seq);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    log_type TEXT NOT NULL,
    phase TEXT NOT NULL,
    fragment_number INTEGER NOT NULL,
    timestamp TEXT NOT NULL,
    log_data TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_job ON logs(job_id, log_type, fragment_number);
CREATE TABLE IF NOT EXISTS blobs (
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,            -- 'artifact' | 'attachments'
    data BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, kind)
);
CREATE TABLE IF NOT EXISTS provision_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    job_id TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    timestamp REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS provision_logs_agent ON provision_logs(agent, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    secret_hash TEXT,
    doc TEXT NOT NULL DEFAULT '{}'     -- role, max_priority, max_reservation_time, ...
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    digest TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    last_accessed REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS refresh_tokens_client ON refresh_tokens(client_id);
CREATE TABLE IF NOT EXISTS restricted_queues (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS secrets (
    client_id TEXT NOT NULL,
    path TEXT NOT NULL,
    value TEXT NOT NULL,
    expires_at REAL,
    ephemeral INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, path)
);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS wait_times (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    seconds REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS wait_times_queue ON wait_times(queue, id);
"""


def iso(ts: float | None) -> str | None:
    """Upstream's wire format for datetimes: naive UTC, seconds, with a trailing Z."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)
    return dt.isoformat(timespec="seconds") + "Z"


def valid_job_id(job_id: str) -> bool:
    """Only the canonical spelling (lowercase, dashed): `{...}`, `urn:uuid:`, dash-less or
    upper-case spellings of the same UUID would otherwise name the job twice."""
    return isinstance(job_id, str) and _CANONICAL_UUID.fullmatch(job_id) is not None


def state_move(current: str, wanted: str) -> str | None:
    """The state a job ends in when `wanted` is posted to it in `current`; None when the
    move is backwards or out of a final state. A cancel sticks: posts after it are no-ops."""
    if current == JobState.CANCELLED:
        return current
    if wanted == JobState.CANCELLED:
        return wanted if current not in JobState.FINAL else None
    if current in JobState.FINAL:
        return current if wanted in (JobState.COMPLETE, JobState.COMPLETED) else None
    if STATE_RANK.get(wanted, -1) < STATE_RANK.get(current, 0):
        return None
    return wanted


class Store:
    """Data access for one SQLite file. Safe to share between threads."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float],
        agent_ttl: float = 7 * DAY,
        job_ttl: float = JOB_TTL,
    ) -> None:
        self.path = str(path)
        self.clock = clock
        self.agent_ttl = agent_ttl
        self.job_ttl = job_ttl
        self._local = threading.local()
        # Writers of this process queue here: waiting in SQLite's busy handler instead,
        # a thread sleeps 1 to 100 ms between tries however soon the lock is free (the
        # hand-out bench spent most of its time there: 270-290 jobs/s).
        self._writing = threading.Lock()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        _create_private(self.path)
        conn = self.conn()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        columns = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
        # A database from before these columns; its jobs count as acknowledged.
        for column, kind in _ADDED_JOB_COLUMNS.items():
            if column not in columns:
                conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        conn.execute("CREATE INDEX IF NOT EXISTS jobs_agent ON jobs(agent, state)")
        # Silence is counted from this process's start too: agents whose answer was lost
        # while the server was down get the whole bound to be heard again.
        self.opened_at = clock()

    # -- connections and transactions -------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE, so
            # a read-then-write (pop, merge) holds the write lock from its first read.
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            # WAL + NORMAL: durable across process crashes, fsync only at checkpoints.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=OFF")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn()
        with self._writing:
            conn.execute("BEGIN IMMEDIATE")  # other processes (a CLI) still meet here
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _agent_cutoff(self) -> float:
        return self.clock() - self.agent_ttl

    def _job_cutoff(self) -> float:
        return self.clock() - self.job_ttl

    # -- agents -----------------------------------------------------------------------
    def post_agent(self, name: str, fields: dict[str, Any]) -> None:
        """Upstream C: `$set` every field but `log`, push `log` (keep 100), bump updated_at."""
        now = self.clock()
        fields = dict(fields)
        new_log = fields.pop("log", None)
        with self.write() as conn:
            row = conn.execute(
                "SELECT doc, log, updated_at FROM agents WHERE name = ?", (name,)
            ).fetchone()
            # An expired row that the sweep has not removed yet starts afresh.
            if row is None or row["updated_at"] < now - self.agent_ttl:
                doc: dict[str, Any] = {}
                log: list[str] = []
            else:
                doc, log = json.loads(row["doc"]), json.loads(row["log"])
            doc.update(fields)
            if new_log:
                log = (log + new_log)[-AGENT_LOG_KEEP:]
            conn.execute(
                "INSERT INTO agents(name, doc, log, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET doc = excluded.doc, log = excluded.log, "
                "updated_at = excluded.updated_at",
                (name, json.dumps(doc), json.dumps(log), now),
            )

    @staticmethod
    def _agent_view(row: sqlite3.Row, *, with_log: bool = False) -> dict[str, Any]:
        doc = json.loads(row["doc"])
        doc["name"] = row["name"]
        doc["updated_at"] = iso(row["updated_at"])
        doc["updated_at_ts"] = row["updated_at"]
        # The local server has no restricted queues; the agent still reads the key.
        doc["restricted_to"] = {}
        if with_log:
            doc["log"] = json.loads(row["log"])
        return doc

    def get_agent(self, name: str, *, with_log: bool = False) -> dict[str, Any] | None:
        row = (
            self.conn()
            .execute(
                "SELECT * FROM agents WHERE name = ? AND updated_at >= ?",
                (name, self._agent_cutoff()),
            )
            .fetchone()
        )
        return self._agent_view(row, with_log=with_log) if row else None

    def list_agents(self) -> list[dict[str, Any]]:
        rows = (
            self.conn()
            .execute(
                "SELECT * FROM agents WHERE updated_at >= ? ORDER BY name", (self._agent_cutoff(),)
            )
            .fetchall()
        )
        return [self._agent_view(row) for row in rows]

    def agents_in_queue(self, queue: str) -> list[dict[str, Any]]:
        return [a for a in self.list_agents() if queue in (a.get("queues") or [])]

    def add_provision_log(self, agent: str, job_id: str, exit_code: int, detail: str) -> bool:
        """Store one provision result; False when the agent is unknown (stored anyway)."""
        now = self.clock()
        with self.write() as conn:
            conn.execute(
                "INSERT INTO provision_logs(agent, job_id, exit_code, detail, timestamp) "
                "VALUES (?, ?, ?, ?, ?)",
                (agent, job_id, exit_code, detail, now),
            )
            conn.execute(
                "DELETE FROM provision_logs WHERE agent = ? AND id NOT IN "
                "(SELECT id FROM provision_logs WHERE agent = ? ORDER BY id DESC LIMIT ?)",
                (agent, agent, PROVISION_LOG_KEEP),
            )
            row = conn.execute(
                "SELECT doc FROM agents WHERE name = ? AND updated_at >= ?",
                (agent, now - self.agent_ttl),
            ).fetchone()
            if row is None:
                return False
            doc = json.loads(row["doc"])
            kind = "pass" if exit_code == 0 else "fail"
            if doc.get("provision_streak_type") == kind:
                doc["provision_streak_count"] = int(doc.get("provision_streak_count", 0)) + 1
            else:
                doc["provision_streak_type"] = kind
                doc["provision_streak_count"] = 1
            # Streak bookkeeping is not a sign of life: updated_at stays as it is.
            conn.execute("UPDATE agents SET doc = ? WHERE name = ?", (json.dumps(doc), agent))
            return True

    def provision_history(self, agent: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = (
            self.conn()
            .execute(
                "SELECT job_id, exit_code, detail, timestamp FROM provision_logs "
                "WHERE agent = ? ORDER BY id DESC LIMIT ?",
                (agent, limit),
            )
            .fetchall()
        )
        return [
            dict(row) | {"timestamp": iso(row["timestamp"]), "ts": row["timestamp"]} for row in rows
        ]

    # -- queues -----------------------------------------------------------------------
    def advertise_queues(self, queues: dict[str, str]) -> None:
        now = self.clock()
        with self.write() as conn:
            for name, description in queues.items():
                conn.execute(
                    "INSERT INTO queues(name, description, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET description = excluded.description, "
                    "updated_at = excluded.updated_at",
                    (name, description, now),
                )

    def advertise_images(self, images: dict[str, dict[str, str]]) -> None:
        # Upstream F replaces the image map but leaves updated_at alone.
        with self.write() as conn:
            for name, image_map in images.items():
                conn.execute(
                    "INSERT INTO queues(name, images) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET images = excluded.images",
                    (name, json.dumps(image_map)),
                )

    def advertised_queues(self) -> dict[str, str]:
        rows = (
            self.conn()
            .execute(
                "SELECT name, description FROM queues WHERE updated_at >= ? ORDER BY name",
                (self._job_cutoff(),),
            )
            .fetchall()
        )
        return {row["name"]: row["description"] or "" for row in rows}

    def all_queues(self) -> dict[str, str]:
        """Advertised queues plus every queue a live agent listens to or a job waits in."""
        queues = {name: "" for agent in self.list_agents() for name in agent.get("queues") or []}
        rows = (
            self.conn()
            .execute(
                "SELECT DISTINCT queue FROM jobs WHERE state = ? AND created_at >= ?",
                (JobState.WAITING, self._job_cutoff()),
            )
            .fetchall()
        )
        queues.update({row["queue"]: queues.get(row["queue"], "") for row in rows})
        queues.update(self.advertised_queues())
        return dict(sorted(queues.items()))

    def queue_counts(self) -> dict[str, dict[str, int]]:
        rows = (
            self.conn()
            .execute(
                "SELECT queue, state = ? AS waiting, COUNT(*) AS n FROM jobs "
                f"WHERE created_at >= ? AND state NOT IN ({_FINAL_MARKS}) "
                "GROUP BY queue, waiting",
                (JobState.WAITING, self._job_cutoff(), *JobState.FINAL),
            )
            .fetchall()
        )
        counts: dict[str, dict[str, int]] = {}
        for row in rows:
            key = "waiting" if row["waiting"] else "running"
            counts.setdefault(row["queue"], {"waiting": 0, "running": 0})[key] = row["n"]
        return counts

    # -- jobs -------------------------------------------------------------------------
    def add_job(
        self,
        job: dict[str, Any],
        *,
        attachments: bool,
        submitter: str | None = None,
        upload_key: str | None = None,
    ) -> str:
        job_id = job.get("job_id") or str(uuid.uuid4())
        job_data = dict(job, job_id=job_id)
        job_data.setdefault("exclude_agents", [])
        if attachments:
            job_data["attachments_status"] = "waiting"
        with self.write() as conn:
            conn.execute(
                "INSERT INTO jobs(job_id, queue, priority, state, attachments_status, "
                "exclude_agents, job_data, result_data, created_at, submitter, upload_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    job_data["job_queue"],
                    int(job_data.get("job_priority", 0)),
                    JobState.WAITING,
                    job_data.get("attachments_status"),
                    json.dumps(job_data["exclude_agents"]),
                    json.dumps(job_data),
                    json.dumps({"job_state": JobState.WAITING}),
                    self.clock(),
                    submitter,
                    upload_key,
                ),
            )
        return job_id

    def _job_row(self, conn: sqlite3.Connection, job_id: str) -> sqlite3.Row | None:
        return conn.execute(
            "SELECT * FROM jobs WHERE job_id = ? AND created_at >= ?",
            (job_id, self._job_cutoff()),
        ).fetchone()

    @staticmethod
    def _job_view(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "job_id": row["job_id"],
            "job_data": json.loads(row["job_data"]),
            "result_data": json.loads(row["result_data"]) | {"job_state": row["state"]},
            "job_state": row["state"],
            "queue": row["queue"],
            "priority": row["priority"],
            "created_at": iso(row["created_at"]),
            "started_at": iso(row["started_at"]),
            "created_ts": row["created_at"],
            "started_ts": row["started_at"],
            "agent": row["agent"],
            "holder": row["holder"],
            "submitter": row["submitter"],
            "upload_key": row["upload_key"],
            "acked": bool(row["acked"]),
        }

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        row = self._job_row(self.conn(), job_id)
        return self._job_view(row) if row else None

    _POP_SQL = (
        "SELECT seq, job_data, queue, created_at FROM jobs WHERE state = ? AND queue IN ({marks}) "
        "AND (attachments_status IS NULL OR attachments_status = 'complete') "
        "AND created_at >= ? "
        "AND NOT EXISTS (SELECT 1 FROM json_each(jobs.exclude_agents) WHERE value = ?) "
        "ORDER BY priority DESC, seq ASC LIMIT 1"
    )

    def pop_job(
        self, queues: list[str], agent: str, holder: str | None = None
    ) -> dict[str, Any] | None:
        """Hand the best waiting job to `agent`: highest priority first, then oldest.

        A plain read first answers the common "nothing to do" poll without taking the
        write lock; the hand-out itself re-selects inside BEGIN IMMEDIATE so two agents
        can never get the same job.
        """
        sql = self._POP_SQL.format(marks=",".join("?" * len(queues)))
        params = (JobState.WAITING, *queues, self._job_cutoff(), agent)
        conn = self.conn()
        unanswered = conn.execute(
            f"{_HANDED_SQL} AND agent = ? AND acked = 0 LIMIT 1", (agent,)
        ).fetchone()
        if unanswered is None and conn.execute(sql, params).fetchone() is None:
            return None
        now = self.clock()
        with self.write() as conn:
            if unanswered is not None:
                # The agent asks again without having answered for its job: the answer
                # never reached it, so the job waits again to be handed out.
                self._take_back(
                    conn,
                    "agent = ? AND acked = 0",
                    (agent,),
                    f"{agent} asked for a job again without having answered for this one",
                )
            row = conn.execute(sql, params).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = ?, started_at = ?, agent = ?, holder = ?, acked = 0 "
                "WHERE seq = ?",
                (JobState.RUNNING, now, agent, holder, row["seq"]),
            )
            conn.execute(
                "INSERT INTO wait_times(queue, seconds, created_at) VALUES (?, ?, ?)",
                (row["queue"], max(0.0, now - row["created_at"]), now),
            )
        job = json.loads(row["job_data"])
        job["started_at"] = iso(now)
        return job

    def _take_back(
        self, conn: sqlite3.Connection, where: str, params: tuple[Any, ...], why: str
    ) -> list[str]:
        """Put hand-outs with no phase begun matching `where` back to waiting, each with an
        event saying why; their ids."""
        rows = conn.execute(f"{_HANDED_SQL} AND {where}", params).fetchall()
        for row in rows:
            result = json.loads(row["result_data"]) | {"job_state": JobState.WAITING}
            conn.execute(
                "UPDATE jobs SET state = ?, agent = NULL, holder = NULL, started_at = NULL, "
                "acked = 1, result_data = ? WHERE seq = ?",
                (JobState.WAITING, json.dumps(result), row["seq"]),
            )
            event = {
                "event_name": TAKEN_BACK,
                "timestamp": datetime.now(timezone.utc).isoformat(),
                "detail": f"handed to {row['agent']} but never started: {why}; waiting again",
            }
            conn.execute(
                "INSERT INTO events(job_id, body, created_at) VALUES (?, ?, ?)",
                (row["job_id"], json.dumps({SERVER_EVENT: event}), self.clock()),
            )
        return [row["job_id"] for row in rows]

    def take_back_from(self, agent: str) -> list[str]:
        """The agent says it runs no job: any job handed to it with no phase begun (say,
        answered for by a process killed before its first phase) waits again. Their ids."""
        conn = self.conn()
        if conn.execute(f"{_HANDED_SQL} AND agent = ? LIMIT 1", (agent,)).fetchone() is None:
            return []
        with self.write() as conn:
            why = f"{agent} says it runs no job"
            return self._take_back(conn, "agent = ?", (agent,), why)

    def take_back_silent(self, bound: float) -> list[str]:
        """Jobs handed out more than `bound` seconds ago (and since this server started)
        whose agent never acknowledged them: back to waiting. Their ids."""
        cutoff = self.clock() - bound
        if cutoff < self.opened_at:
            return []
        conn = self.conn()
        silent = "acked = 0 AND started_at < ?"
        if conn.execute(f"{_HANDED_SQL} AND {silent} LIMIT 1", (cutoff,)).fetchone() is None:
            return []
        with self.write() as conn:
            why = f"no word from the agent for {bound:g} s"
            return self._take_back(conn, silent, (cutoff,), why)

    def acknowledge(self, job_id: str, agent: str | None) -> bool:
        """The agent the job went to has answered for it: it is no longer taken back.
        False when the job is not held by `agent` (None: by any agent) any more."""
        with self.write() as conn:
            row = self._job_row(conn, job_id)
            if row is None or row["agent"] is None or row["state"] == JobState.WAITING:
                return False
            if agent is not None and row["agent"] != agent:
                return False
            if not row["acked"]:
                conn.execute("UPDATE jobs SET acked = 1 WHERE seq = ?", (row["seq"],))
            return True

    def update_result(self, job_id: str, fields: dict[str, Any]) -> str:
        """Upstream J: `$set` each field of result_data: 'ok', 'missing', or 'backwards'
        (a state move `state_move` refuses: nothing is stored)."""
        with self.write() as conn:
            row = self._job_row(conn, job_id)
            if row is None:
                return "missing"
            result = json.loads(row["result_data"])
            state = row["state"]
            if "job_state" in fields:
                moved = state_move(state, fields["job_state"])
                if moved is None:
                    return "backwards"
                state = moved
            codes = fields.get("status")
            if isinstance(codes, dict):
                # When each phase ended: the job page's end and duration of a phase,
                # cleanup's too (its start is announced by no state of its own).
                known = result.get("status") or {}
                ends = result.setdefault(PHASE_ENDS, {})
                for phase in codes:
                    if phase not in known:
                        ends.setdefault(phase, self.clock())
            result.update((k, v) for k, v in fields.items() if k != "job_state")
            result["job_state"] = state
            if state != row["state"]:
                # When each state began: the job page's per-phase start, end and duration.
                result.setdefault(TIMELINE, {}).setdefault(state, self.clock())
            conn.execute(
                "UPDATE jobs SET result_data = ?, state = ? WHERE seq = ?",
                (json.dumps(result), state, row["seq"]),
            )
            return "ok"

    def cancel_job(self, job_id: str) -> str:
        """'ok', 'missing', or 'final' (already cancelled or complete)."""
        with self.write() as conn:
            row = self._job_row(conn, job_id)
            if row is None:
                return "missing"
            if row["state"] in JobState.FINAL:
                return "final"
            result = json.loads(row["result_data"]) | {"job_state": JobState.CANCELLED}
            result.setdefault(TIMELINE, {}).setdefault(JobState.CANCELLED, self.clock())
            conn.execute(
                "UPDATE jobs SET state = ?, result_data = ? WHERE seq = ?",
                (JobState.CANCELLED, json.dumps(result), row["seq"]),
            )
            return "ok"

    def job_position(self, job_id: str) -> int | None:
        conn = self.conn()
        row = self._job_row(conn, job_id)
        if row is None or row["state"] != JobState.WAITING:
            return None
        (ahead,) = conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE state = ? AND queue = ? "
            "AND created_at >= ? AND (priority > ? OR (priority = ? AND seq < ?))",
            (
                JobState.WAITING,
                row["queue"],
                self._job_cutoff(),
                row["priority"],
                row["priority"],
                row["seq"],
            ),
        ).fetchone()
        return int(ahead)

    def list_jobs(
        self, *, queue: str | None = None, agent: str | None = None, limit: int | None = 50
    ) -> list[dict[str, Any]]:
        where: list[str] = ["created_at >= ?"]
        params: list[object] = [self._job_cutoff()]
        if queue is not None:
            where.append("queue = ?")
            params.append(queue)
        if agent is not None:
            where.append("agent = ?")
            params.append(agent)
        rows = (
            self.conn()
            .execute(
                f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
                (*params, -1 if limit is None else limit),
            )
            .fetchall()
        )
        return [self._job_view(row) for row in rows]

    def search_jobs(
        self, *, tags: list[str], match_all: bool, states: list[str]
    ) -> list[dict[str, Any]]:
        """Upstream's job search: tags (any or all), states (`active` = not finished)."""
        wanted = set(states) - {"active"}
        found = []
        for job in reversed(self.list_jobs(limit=None)):
            job_tags = set(job["job_data"].get("tags") or [])
            if tags and not (set(tags) <= job_tags if match_all else set(tags) & job_tags):
                continue
            state = job["job_state"]
            active = "active" in states and state not in JobState.FINAL
            if states and not (active or state in wanted):
                continue
            found.append(
                {"job_id": job["job_id"], "created_at": job["created_at"], "job_state": state}
            )
        return found

    def queue_images(self, queue: str) -> dict[str, str]:
        row = self.conn().execute("SELECT images FROM queues WHERE name = ?", (queue,)).fetchone()
        return json.loads(row["images"]) if row and row["images"] else {}

    def wait_time_percentiles(self, queues: list[str] | None) -> dict[str, dict[str, float]]:
        """Per queue, the 5th..95th percentiles of the waits from submission to hand-out."""
        rows = self.conn().execute("SELECT queue, seconds FROM wait_times ORDER BY id").fetchall()
        waits: dict[str, list[float]] = {}
        for row in rows:
            if queues is None or row["queue"] in queues:
                waits.setdefault(row["queue"], []).append(row["seconds"])
        return {
            queue: {str(p): percentile(sorted(values), p) for p in (5, 10, 50, 90, 95)}
            for queue, values in sorted(waits.items())
        }

    def set_attachments(self, job_id: str, data: bytes) -> str:
        """Store the attachment archive once: 'ok', 'missing', 'not-waiting' (the job takes
        none) or 'complete' (already stored; nothing changes)."""
        with self.write() as conn:
            row = self._job_row(conn, job_id)
            if row is None:
                return "missing"
            if row["attachments_status"] is None:
                return "not-waiting"
            if row["attachments_status"] == "complete":
                return "complete"
            self._put_blob(conn, job_id, "attachments", data)
            job_data = json.loads(row["job_data"]) | {"attachments_status": "complete"}
            conn.execute(
                "UPDATE jobs SET attachments_status = 'complete', job_data = ? WHERE seq = ?",
                (json.dumps(job_data), row["seq"]),
            )
            return "ok"

    # -- blobs, logs, events ----------------------------------------------------------
    def _put_blob(self, conn: sqlite3.Connection, job_id: str, kind: str, data: bytes) -> None:
        conn.execute(
            "INSERT INTO blobs(job_id, kind, data, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(job_id, kind) DO UPDATE SET data = excluded.data, "
            "created_at = excluded.created_at",
            (job_id, kind, data, self.clock()),
        )

    def put_artifact(self, job_id: str, data: bytes) -> None:
        # Like upstream, no existence check: a later upload simply wins.
        with self.write() as conn:
            self._put_blob(conn, job_id, "artifact", data)

    def get_blob(self, job_id: str, kind: str) -> bytes | None:
        row = (
            self.conn()
            .execute(
                "SELECT data FROM blobs WHERE job_id = ? AND kind = ? AND created_at >= ?",
                (job_id, kind, self._job_cutoff()),
            )
            .fetchone()
        )
        return bytes(row["data"]) if row else None

    def has_blob(self, job_id: str, kind: str) -> bool:
        row = (
            self.conn()
            .execute(
                "SELECT 1 FROM blobs WHERE job_id = ? AND kind = ? AND created_at >= ?",
                (job_id, kind, self._job_cutoff()),
            )
            .fetchone()
        )
        return row is not None

    def add_log(self, job_id: str, log_type: str, fragment: dict[str, Any]) -> None:
        with self.write() as conn:
            conn.execute(
                "INSERT INTO logs(job_id, log_type, phase, fragment_number, timestamp, "
                "log_data, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    log_type,
                    fragment["phase"],
                    fragment["fragment_number"],
                    fragment["timestamp"],
                    fragment["log_data"],
                    self.clock(),
                ),
            )

    def get_logs(
        self,
        job_id: str,
        log_type: str,
        *,
        phase: str | None = None,
        start_fragment: int = 0,
        start_timestamp: str | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Fragments joined per phase: `{phase: {last_fragment_number, log_data}}`."""
        where = ["job_id = ?", "log_type = ?", "fragment_number >= ?", "created_at >= ?"]
        params: list[Any] = [job_id, log_type, start_fragment, self._job_cutoff()]
        if phase:
            where.append("phase = ?")
            params.append(phase)
        rows = (
            self.conn()
            .execute(
                f"SELECT phase, fragment_number, timestamp, log_data FROM logs "
                f"WHERE {' AND '.join(where)} ORDER BY fragment_number, id",
                params,
            )
            .fetchall()
        )
        since = _parse_ts(start_timestamp) if start_timestamp else None
        out: dict[str, dict[str, Any]] = {}
        if phase:
            out[phase] = {"last_fragment_number": -1, "log_data": ""}
        parts: dict[str, list[str]] = {}
        for row in rows:
            if since is not None and _parse_ts(row["timestamp"]) < since:
                continue
            entry = out.setdefault(row["phase"], {"last_fragment_number": -1, "log_data": ""})
            entry["last_fragment_number"] = row["fragment_number"]
            parts.setdefault(row["phase"], []).append(row["log_data"])
        for name, texts in parts.items():
            out[name]["log_data"] = "".join(texts)
        ordered = sorted(out, key=lambda p: Phase.ALL.index(p) if p in Phase.ALL else 99)
        return {name: out[name] for name in ordered}

    def add_events(self, job_id: str, body: dict[str, Any]) -> None:
        with self.write() as conn:
            conn.execute(
                "INSERT INTO events(job_id, body, created_at) VALUES (?, ?, ?)",
                (job_id, json.dumps(body), self.clock()),
            )

    def get_events(self, job_id: str) -> list[dict[str, Any]]:
        """The agent's newest post (it re-sends the whole list each time) and every event
        of the server's own, in time order."""
        rows = (
            self.conn()
            .execute("SELECT body FROM events WHERE job_id = ? ORDER BY id", (job_id,))
            .fetchall()
        )
        agents: list[dict[str, Any]] = []
        servers: list[dict[str, Any]] = []
        for row in rows:
            body = json.loads(row["body"])
            if SERVER_EVENT in body:
                servers.append(body[SERVER_EVENT])
            else:
                agents = body.get("events", [])
        if not servers:
            return agents
        return sorted(agents + servers, key=lambda e: str(e.get("timestamp", "")))

    # -- expiry -----------------------------------------------------------------------
    def sweep(self) -> dict[str, int]:
        """Delete everything past its deadline; returns the number of rows per table."""
        agent_cutoff, job_cutoff = self._agent_cutoff(), self._job_cutoff()
        counts: dict[str, int] = {}
        with self.write() as conn:
            counts["agents"] = conn.execute(
                "DELETE FROM agents WHERE updated_at < ?", (agent_cutoff,)
            ).rowcount
            counts["provision_logs"] = conn.execute(
                "DELETE FROM provision_logs WHERE timestamp < ?", (agent_cutoff,)
            ).rowcount
            for table in ("logs", "blobs", "events"):
                counts[table] = conn.execute(
                    f"DELETE FROM {table} WHERE created_at < ? OR job_id IN "
                    f"(SELECT job_id FROM jobs WHERE created_at < ?)",
                    (job_cutoff, job_cutoff),
                ).rowcount
            counts["jobs"] = conn.execute(
                "DELETE FROM jobs WHERE created_at < ?", (job_cutoff,)
            ).rowcount
            counts["wait_times"] = conn.execute(
                "DELETE FROM wait_times WHERE created_at < ?", (self.clock() - WAIT_TIMES_KEEP,)
            ).rowcount
            counts["queues"] = conn.execute(
                "DELETE FROM queues WHERE updated_at < ?", (job_cutoff,)
            ).rowcount
        return counts


def percentile(ordered: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _create_private(path: str) -> None:
    """Create the database file 0600 before SQLite does: it holds hashed client secrets and
    the secrets store (SQLite gives its -wal and -shm files the same mode)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _parse_ts(value: str) -> float:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()
