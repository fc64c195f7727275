"""A job handed out is the agent's only once the agent answers for it (its first word names
the job). A hand-out whose answer never reached the agent (the agent asks again, or says
nothing past --ack-timeout) goes back to waiting with an event, and still runs once."""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from functools import partial
from pathlib import Path

import pytest
import requests
from fixtures_server import Clock, LocalServer, running_server, wait_for
from flask.testing import FlaskClient

from multiagent.server.app import create_app
from multiagent.server.db import TAKEN_BACK
from multiagent.server.expiry import Sweeper
from multiagent.server.policy import Policy

ACK_TIMEOUT = 60.0


@pytest.fixture
def app(tmp_path: Path, clock: Clock):
    return create_app(tmp_path / "h.db", Policy(ack_timeout=ACK_TIMEOUT), clock=clock)


def agent(app, name: str) -> FlaskClient:
    c = app.test_client()
    assert c.post(f"/v1/agents/data/{name}", json={"queues": ["q"]}).status_code == 200
    return c


def pop(c: FlaskClient) -> str | None:
    resp = c.get("/v1/job", query_string={"queue": "q"})
    return resp.get_json()["job_id"] if resp.status_code == 200 else None


def ack(c: FlaskClient, name: str, job_id: str) -> int:
    return c.post(f"/v1/agents/data/{name}", json={"job_id": job_id}).status_code


def state(app, job_id: str) -> str:
    return app.test_client().get(f"/v1/result/{job_id}").get_json()["job_state"]


def taken_back(app, job_id: str) -> list[str]:
    events = app.extensions["tf_store"].get_events(job_id)
    return [e["detail"] for e in events if e["event_name"] == TAKEN_BACK]


def test_an_agent_asking_again_gets_its_unanswered_job_back(app):
    job_id = app.test_client().post("/v1/job", json={"job_queue": "q"}).get_json()["job_id"]
    a1 = agent(app, "a1")
    assert pop(a1) == job_id and state(app, job_id) == "running"
    # The answer was lost: a1 asks again and is handed the same job afresh.
    assert pop(a1) == job_id
    assert taken_back(app, job_id) == [
        "handed to a1 but never started: a1 asked for a job again without having "
        "answered for this one; waiting again"
    ]
    assert ack(a1, "a1", job_id) == 200
    assert pop(a1) is None and state(app, job_id) == "running"
    assert len(taken_back(app, job_id)) == 1
    page = app.test_client().get(f"/jobs/{job_id}").get_data(as_text=True)
    assert TAKEN_BACK in page and "never started" in page


def test_upstream_agents_first_posts_answer_for_the_job(app):
    """Upstream's agent, having a job, first posts its job_start event (when the job has
    a webhook) or its agent data naming the job: either answers for it."""
    submit = app.test_client()
    hooked = submit.post("/v1/job", json={"job_queue": "q", "job_status_webhook": "http://h"})
    plain = submit.post("/v1/job", json={"job_queue": "q"})
    a1 = agent(app, "a1")
    assert pop(a1) == hooked.get_json()["job_id"]
    event = {"event_name": "job_start", "timestamp": "t", "detail": "d"}
    body = {"agent_id": "a1", "job_queue": "q", "job_status_webhook": "http://h", "events": [event]}
    job_id = hooked.get_json()["job_id"]
    assert a1.post(f"/v1/job/{job_id}/events", json=body).status_code == 200
    assert pop(a1) == plain.get_json()["job_id"]  # asking again takes nothing back
    assert ack(a1, "a1", plain.get_json()["job_id"]) == 200
    assert state(app, job_id) == "running" and taken_back(app, job_id) == []


def test_an_agent_saying_it_runs_no_job_gives_back_only_an_unstarted_one(app):
    """A process killed between answering for its job and its first phase: its successor
    registers with no job, and the job waits again. A begun job is left to its record."""
    submitted = app.test_client()
    unstarted = submitted.post("/v1/job", json={"job_queue": "q"}).get_json()["job_id"]
    a1 = agent(app, "a1")
    assert pop(a1) == unstarted and ack(a1, "a1", unstarted) == 200
    idle = {"state": "waiting", "job_id": ""}
    assert a1.post("/v1/agents/data/a1", json=idle).status_code == 200
    assert state(app, unstarted) == "waiting"
    assert taken_back(app, unstarted) == [
        "handed to a1 but never started: a1 says it runs no job; waiting again"
    ]
    assert pop(a1) == unstarted and ack(a1, "a1", unstarted) == 200
    assert a1.post(f"/v1/result/{unstarted}", json={"job_state": "setup"}).status_code == 200
    assert a1.post("/v1/agents/data/a1", json=idle).status_code == 200
    assert state(app, unstarted) == "setup" and len(taken_back(app, unstarted)) == 1


def test_a_late_answer_for_a_job_given_to_another_is_refused(app):
    job_id = app.test_client().post("/v1/job", json={"job_queue": "q"}).get_json()["job_id"]
    a1, a2 = agent(app, "a1"), agent(app, "a2")
    assert pop(a1) == job_id
    # a1 asks again (for another queue): its unanswered job waits again, and a2 gets it.
    assert a1.get("/v1/job", query_string={"queue": "other"}).status_code == 204
    assert state(app, job_id) == "waiting"
    assert pop(a2) == job_id
    assert ack(a1, "a1", job_id) == 409
    assert a1.post(f"/v1/result/{job_id}", json={"job_state": "setup"}).status_code == 403
    assert ack(a2, "a2", job_id) == 200
    assert a2.post(f"/v1/result/{job_id}", json={"job_state": "setup"}).status_code == 200
    assert state(app, job_id) == "setup"


def test_a_silent_agent_loses_its_unanswered_job_after_the_bound(app, clock: Clock):
    store = app.extensions["tf_store"]
    job_id = app.test_client().post("/v1/job", json={"job_queue": "q"}).get_json()["job_id"]
    answered = app.test_client().post("/v1/job", json={"job_queue": "q"}).get_json()["job_id"]
    a1, a2 = agent(app, "a1"), agent(app, "a2")
    assert pop(a1) == job_id
    assert pop(a2) == answered and ack(a2, "a2", answered) == 200
    sweeper = Sweeper(store, ack_timeout=ACK_TIMEOUT)
    clock.advance(ACK_TIMEOUT - 1)
    assert sweeper.take_back_once() == [] and state(app, job_id) == "running"
    clock.advance(2)
    assert sweeper.take_back_once() == [job_id]
    assert state(app, job_id) == "waiting" and state(app, answered) == "running"
    assert taken_back(app, job_id) == [
        f"handed to a1 but never started: no word from the agent for {ACK_TIMEOUT:g} s; "
        "waiting again"
    ]
    # Its first word, a result post, comes too late: refused, the job still waits.
    assert a1.post(f"/v1/result/{job_id}", json={"job_state": "setup"}).status_code == 403
    assert state(app, job_id) == "waiting"


def test_the_bound_counts_from_the_server_start(tmp_path: Path, clock: Clock):
    """An agent whose answer could not reach a stopped server gets the whole bound after
    the server is back."""
    first = create_app(tmp_path / "r.db", Policy(ack_timeout=ACK_TIMEOUT), clock=clock)
    job_id = first.test_client().post("/v1/job", json={"job_queue": "q"}).get_json()["job_id"]
    assert pop(agent(first, "a1")) == job_id
    clock.advance(10 * ACK_TIMEOUT)  # the server was down
    again = create_app(tmp_path / "r.db", Policy(ack_timeout=ACK_TIMEOUT), clock=clock)
    sweeper = Sweeper(again.extensions["tf_store"], ack_timeout=ACK_TIMEOUT)
    assert sweeper.take_back_once() == []
    a1 = again.test_client()
    a1.set_cookie("agent_name", "a1")
    assert ack(a1, "a1", job_id) == 200
    clock.advance(2 * ACK_TIMEOUT)
    assert sweeper.take_back_once() == [] and state(again, job_id) == "running"


# -- the server killed while handing out jobs ------------------------------------------
JOBS = 1000
KILLS = 6
POLLERS = 20


def posted(session: requests.Session, url: str, body: dict, stop: threading.Event) -> int | None:
    """The status of a POST, tried again while the server does not answer (it is being
    restarted); None if the test ends first."""
    while not stop.is_set():
        try:
            return session.post(url, json=body, timeout=5).status_code
        except requests.RequestException:
            stop.wait(0.05)
    return None


def test_server_killed_during_hand_outs_strands_no_job_and_runs_none_twice(tmp_path: Path):
    # Thousands of requests: the server runs unmeasured (its hand-out paths are measured by
    # the tests above), which halves the test's time.
    with running_server(tmp_path, extra_args=["--ack-timeout", "2s"], measured=False) as server:
        url = server.url
        with requests.Session() as submitter:
            jobs = [
                submitter.post(f"{url}/v1/job", json={"job_queue": "crash"}, timeout=10).json()[
                    "job_id"
                ]
                for _ in range(JOBS)
            ]
        ran: dict[str, list[str]] = defaultdict(list)
        lock = threading.Lock()
        stop = threading.Event()

        def poller(name: str) -> None:
            session = requests.Session()
            register = {"state": "waiting", "queues": ["crash"]}
            posted(session, f"{url}/v1/agents/data/{name}", register, stop)
            while not stop.is_set():
                try:
                    resp = session.get(f"{url}/v1/job", params={"queue": "crash"}, timeout=5)
                except requests.RequestException:
                    stop.wait(0.05)  # the answer was lost: ask again
                    continue
                if resp.status_code != 200:
                    stop.wait(0.02)
                    continue
                job_id = resp.json()["job_id"]
                answer = {"job_id": job_id}
                if posted(session, f"{url}/v1/agents/data/{name}", answer, stop) != 200:
                    continue  # taken back meanwhile: not ours to run
                with lock:
                    ran[job_id].append(name)
                done = {"job_state": "complete", "status": {"test": 0}}
                posted(session, f"{url}/v1/result/{job_id}", done, stop)

        threads = [threading.Thread(target=poller, args=(f"p{i}",)) for i in range(POLLERS)]
        for t in threads:
            t.start()
        try:
            for kill in range(1, KILLS + 1):
                due = kill * JOBS // (KILLS + 1)
                wait_for(partial(at_least, ran, due), timeout=60, what=f"{due} jobs run")
                assert server.proc is not None
                server.proc.kill()  # mid-flight: pollers are being handed jobs right now
                server.proc.wait()
                server.proc = None
                server.start()
            wait_for(lambda: complete(server.db_path) == JOBS, timeout=60, what="all jobs done")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        twice = {job: names for job, names in ran.items() if len(names) > 1}
        states = job_states(server.db_path)
        stranded = [job for job in jobs if states.get(job) != "complete"]
        assert stranded == [] and twice == {}
        assert set(ran) == set(jobs)
        print(f"{JOBS} jobs, {KILLS} kills: 0 stranded, 0 twice; taken back {taken(server)}")


def at_least(ran: dict[str, list[str]], n: int) -> bool:
    return len(ran) >= n


def job_states(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT job_id, state FROM jobs").fetchall())


def complete(db: Path) -> int:
    return sum(1 for s in job_states(db).values() if s == "complete")


def taken(server: LocalServer) -> int:
    with sqlite3.connect(server.db_path) as conn:
        (n,) = conn.execute(
            "SELECT COUNT(*) FROM events WHERE body LIKE ?", (f"%{TAKEN_BACK}%",)
        ).fetchone()
    return int(n)
