"""The pages as a person sees them: a real headless Chromium loads each page from a live
server on 127.0.0.1, runs its scripts, and the test reads the resulting DOM."""

from __future__ import annotations

import fcntl
import html
import json
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fixtures_server import LocalServer, wait_for

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


class Browser:
    """A headless Chromium driven over its DevTools pipe (fds 3 and 4, no websocket):
    open a page, then read its live DOM as often as a test needs, in real time."""

    def __init__(self, profile: Path) -> None:
        assert CHROMIUM is not None
        to_browser, self._commands = os.pipe()
        self._replies, from_browser = os.pipe()
        # Above any fd the child could already hold at 3 or 4, so the dup2 below is safe.
        theirs = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]
        for fd in (to_browser, from_browser):
            os.close(fd)

        def as_fds_3_and_4() -> None:
            os.dup2(theirs[0], 3)
            os.dup2(theirs[1], 4)

        cmd = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            cmd,
            pass_fds=(3, 4),
            preexec_fn=as_fds_3_and_4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in theirs:
            os.close(fd)
        self._buffer = b""
        self._last_id = 0

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._last_id += 1
        message: dict = {"id": self._last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 20
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                ready, _, _ = select.select([self._replies], [], [], max(0.0, left))
                assert ready, f"Chromium did not answer {method}"
                chunk = os.read(self._replies, 65536)
                assert chunk, "Chromium closed its DevTools pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._last_id:
                assert "error" not in reply, reply["error"]
                return reply.get("result", {})

    def open(self, url: str) -> str:
        """A new tab on `url`; returns its session, for `js`."""
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        return self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]

    def js(self, session: str, expression: str) -> object:
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session
        )
        return result.get("result", {}).get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._commands)
        os.close(self._replies)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    one = Browser(tmp_path / "profile-live")
    try:
        yield one
    finally:
        one.close()


def text_of(browser: Browser, session: str, selector: str) -> object:
    return browser.js(
        session, f"(e => e && e.textContent.trim())(document.querySelector({json.dumps(selector)}))"
    )


def test_running_job_and_agent_pages_update_without_reload(browser: Browser, tmp_path: Path):
    """A person keeps a running job's page and its agent's page open: both follow the
    job to its end by themselves (the page is never reloaded), the job's page shows its
    verdict and stops asking once the job is over."""
    server = LocalServer(tmp_path / "live.db", tmp_path / "live.log")
    server.start()
    try:
        url = server.url
        agent = requests.Session()
        agent.post(f"{url}/v1/agents/data/dut-l", json={"queues": ["lq"]}, timeout=5)
        job_id = server.submit(
            {"job_queue": "lq", "name": "<b>smoke</b> job", "test_data": {"test_cmds": "true"}}
        )
        assert agent.get(f"{url}/v1/job", params={"queue": "lq"}, timeout=5).ok
        agent.post(
            f"{url}/v1/agents/data/dut-l", json={"job_id": job_id, "state": "test"}, timeout=5
        )
        for phase in ("setup", "test"):
            agent.post(f"{url}/v1/result/{job_id}", json={"job_state": phase}, timeout=5)

        job_tab = browser.open(f"{url}/jobs/{job_id}")
        agent_tab = browser.open(f"{url}/agents/dut-l")
        for tab in (job_tab, agent_tab):
            ready = "document.body && document.body.dataset.js"
            wait_for(lambda: browser.js(tab, ready) == "ready", timeout=20, what="script ran")  # noqa: B023
            browser.js(tab, "window.sameLoad = 'yes'")  # gone if the page were reloaded
        assert text_of(browser, job_tab, ".verdict") == "running (test)"
        assert text_of(browser, job_tab, ".job-name") == "<b>smoke</b> job"  # text, not markup
        assert text_of(browser, agent_tab, ".agent-state") == "test"
        assert text_of(browser, agent_tab, ".agent-job") == f"<b>smoke</b> job {job_id}"

        agent.post(f"{url}/v1/result/{job_id}", json={"status": {"setup": 0, "test": 3}}, timeout=5)
        agent.post(
            f"{url}/v1/result/{job_id}",
            json={"status": {"setup": 0, "test": 3, "cleanup": 0}, "job_state": "complete"},
            timeout=5,
        )
        agent.post(
            f"{url}/v1/agents/data/dut-l", json={"job_id": "", "state": "waiting"}, timeout=5
        )

        wait_for(
            lambda: text_of(browser, job_tab, ".verdict") == "failed in test (exit 3)",
            timeout=20,
            what="the job's page shows the verdict",
        )
        assert text_of(browser, job_tab, ".job-state") == "complete"
        wait_for(
            lambda: browser.js(job_tab, "document.body.dataset.live") == "ended",
            what="the job's page stops asking once the job is over",
        )
        wait_for(
            lambda: text_of(browser, agent_tab, ".agent-state") == "waiting",
            timeout=20,
            what="the agent's page shows it waiting",
        )
        assert text_of(browser, agent_tab, ".verdict") == "failed in test (exit 3)"
        for tab in (job_tab, agent_tab):
            assert browser.js(tab, "window.sameLoad") == "yes"
        cleanup = browser.js(
            job_tab,
            "[...document.querySelectorAll('tr[data-phase=cleanup] td')].map(td => td.textContent)",
        )
        assert isinstance(cleanup, list) and cleanup[1] == "0" and cleanup[2].endswith(" UTC")
        assert cleanup[3].endswith(" UTC")
    finally:
        server.stop()
