"""The pages as a person sees them: a real headless Chromium loads each page from a live
server on 127.0.0.1, runs its scripts, and the test reads the resulting DOM."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from fixtures_server import LocalServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)"
)


def chromium_dom(url: str, profile: Path) -> subprocess.Popen[str]:
    """Start Chromium on `url`; its stdout is the DOM after scripts ran (2 s of page time)."""
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=2000",
        "--dump-dom",
        url,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def visible_text(dom: str) -> str:
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def rows(dom: str) -> list[str]:
    return re.findall(r'<tr class="agent[^"]*" id="agent-([^"]+)"', dom)


@pytest.fixture
def populated(tmp_path: Path):
    server = LocalServer(tmp_path / "web.db", tmp_path / "web.log")
    server.start()
    try:
        agents = {
            "dut-a": {"state": "waiting", "queues": ["lab"], "location": "rack 1"},
            "dut-b": {"state": "offline", "queues": ["lab"], "location": "rack 2"},
            "dut-c": {"state": "test", "queues": ["gpu"], "location": "rack 1"},
        }
        for name, body in agents.items():
            resp = requests.post(f"{server.url}/v1/agents/data/{name}", json=body, timeout=5)
            resp.raise_for_status()
        job_id = server.submit({"job_queue": "gpu", "test_data": {"test_cmds": "true"}})
        poller = requests.Session()
        poller.post(f"{server.url}/v1/agents/data/dut-c", json={"state": "test"}, timeout=5)
        assert poller.get(f"{server.url}/v1/job", params={"queue": "gpu"}, timeout=5).ok
        poller.post(f"{server.url}/v1/agents/data/dut-c", json={"job_id": job_id}, timeout=5)
        for phase in ("setup", "provision", "test"):
            poller.post(f"{server.url}/v1/result/{job_id}", json={"job_state": phase}, timeout=5)
        poller.post(
            f"{server.url}/v1/result/{job_id}",
            json={"status": {"setup": 0, "test": 3}, "job_state": "complete"},
            timeout=5,
        )
        yield server, job_id
    finally:
        server.stop()


def test_pages_in_chromium(populated, tmp_path: Path):
    server, job_id = populated
    pages = {
        "all": "/agents",
        "offline": "/agents?state=offline",
        "rack1": "/agents?location=rack+1&sort=name&dir=desc",
        "job": f"/jobs/{job_id}",
        "unknown_agent": "/agents/nobody",
        "unknown_job": "/jobs/00000000-0000-0000-0000-000000000000",
    }
    procs = {
        key: chromium_dom(server.url + path, tmp_path / f"profile-{key}")
        for key, path in pages.items()
    }
    dom = {}
    for key, proc in procs.items():
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, key
        dom[key] = out

    everything = dom["all"]
    assert 'data-js="ready"' in everything  # the page's script ran
    text = visible_text(everything)
    assert "all: 3" in text and "offline: 1" in text and "waiting: 1" in text
    assert "This page refreshes itself every 30 s." in text
    assert "just now" in text and "UTC" in text
    assert rows(everything) == ["dut-a", "dut-b", "dut-c"]
    assert re.search(r'class="agent offline" id="agent-dut-b"', everything)

    # The filter is in the address, so the self-refresh (a reload) keeps it.
    offline = dom["offline"]
    assert rows(offline) == ["dut-b"]
    assert '<option value="offline" selected="">offline</option>' in offline
    assert "1 of 3 agents shown" in visible_text(offline)

    assert rows(dom["rack1"]) == ["dut-c", "dut-a"]

    job = visible_text(dom["job"])
    assert f"Job {job_id}" in job
    assert "Queue gpu" in job and "Agent dut-c" in job and "Started 20" in job
    assert re.search(r'class="job-agent"><a href="/agents/dut-c">dut-c</a>', dom["job"])
    assert re.search(r'data-phase="test"><td>test</td><td class="fail">3</td>', dom["job"])
    assert re.search(r'data-phase="provision"><td>provision</td><td class="skipped">', dom["job"])
    assert "provision_fail" not in dom["job"]
    assert re.search(r'class="job-end">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC', dom["job"])

    for key in ("unknown_agent", "unknown_job"):
        page = visible_text(dom[key])
        assert "Not found" in page and "Back to Agents" in page
        assert '<nav><a href="/agents">Agents</a>' in dom[key]
