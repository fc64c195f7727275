"""What the server shows of an agent is the agent's: a job that ends while the server is down
does not leave the agent shown busy once the server is back (real agent, real server)."""

from __future__ import annotations

import re
import sqlite3
import sys
import time
from pathlib import Path

import requests
from fixtures_agent import job, wait_for

POLLING_INTERVAL = 2.0
CONNECTOR = f"{sys.executable} -m multiagent.connectors.local"


def server_doc(db: Path, name: str) -> dict:
    import json

    with sqlite3.connect(db) as conn:
        (doc,) = conn.execute("SELECT doc FROM agents WHERE name = ?", (name,)).fetchone()
    return json.loads(doc)


def agents_page_row(url: str, name: str) -> str:
    page = requests.get(f"{url}/agents", timeout=5).text
    found = re.search(rf'<tr [^>]*id="agent-{re.escape(name)}".*?</tr>', page, re.S)
    assert found, page
    return found.group(0)


def test_a_job_ending_during_an_outage_is_shown_right_at_the_first_poll_after(
    tf_server, make_agent, tmp_path: Path
):
    gate = tmp_path / "gate"
    agent = make_agent(
        tf_server.url, polling_interval=POLLING_INTERVAL, test_command=f"{CONNECTOR} test"
    ).start()
    job_id = tf_server.submit(job(agent, f"while [ ! -e {gate} ]; do sleep 0.05; done; echo ok"))
    agent.wait_status(lambda s: s["state"] == "test", what="test phase")
    wait_for(
        lambda: (
            requests.get(f"{tf_server.url}/v1/agents/data/{agent.name}", timeout=5)
            .json()
            .get("job_id")
            == job_id
        ),
        what="the server showing the job",
    )
    tf_server.stop()
    gate.touch()
    agent.wait_status(lambda s: s["job_id"] is None, timeout=30, what="the job over locally")
    stale = server_doc(tf_server.db_path, agent.name)
    assert stale["job_id"] == job_id and stale["state"] != "waiting"  # what the outage left

    tf_server.start()
    back = time.time()
    # The agent's first poll after the outage: by then the server shows the truth.
    agent.wait_status(lambda s: (s.get("last_poll") or 0) > back, timeout=40, what="a poll")
    fixed_after = time.time() - back
    shown = requests.get(f"{tf_server.url}/v1/agents/data/{agent.name}", timeout=5).json()
    assert (shown["state"], shown["job_id"]) == ("waiting", "")
    row = agents_page_row(tf_server.url, agent.name)
    assert 'data-state="waiting"' in row and job_id not in row
    tf_server.wait_job_state(job_id, {"complete"}, timeout=30)
    assert tf_server.result(job_id)["test_status"] == 0
    print(f"agent shown right {fixed_after:.2f} s after the server was back")
