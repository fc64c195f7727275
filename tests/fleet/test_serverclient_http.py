"""tf-fleet's requests to the server, against a real HTTP server on 127.0.0.1: redirects
followed as urllib followed them, cookies, proxies from the environment, no answer."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fixtures_server import free_port

from multiagent.fleet.serverclient import MAX_REDIRECTS, ServerClient, Unreachable


class Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, bytes, dict[str, str]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, body, dict(self.headers)))
        path = self.path
        if path == "/moved":
            self._answer(301, Location="/v1/agents/data")
        elif path == "/relative/moved":
            self._answer(302, Location="target?x=1")
        elif path == "/relative/target?x=1":
            self._answer(200, b'"relative"')
        elif path == "/post-303":
            self._answer(303, Location="/v1/agents/data")
        elif path == "/post-307":
            self._answer(307, Location="/v1/agents/data")
        elif path == "/loop":
            self._answer(302, Location="/loop")
        elif path == "/v1/agents/data":
            self._answer(200, b'[{"name": "a1"}]', Set_Cookie="agent_name=a1; Path=/")
        elif path.startswith("http://"):  # absolute form: this server is the proxy
            self._answer(200, b'"proxied"')
        else:
            self._answer(404, b"no")

    do_GET = do_POST = _handle


@pytest.fixture
def server() -> Iterator[str]:
    Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_get_follows_redirects_and_reads_cookies(server: str) -> None:
    client = ServerClient(server)
    answer = client.request("GET", "/moved")
    assert (answer.status, answer.json()) == (200, [{"name": "a1"}])
    assert answer.cookies == {"agent_name": "a1"}
    assert client.request("GET", "/relative/moved").json() == "relative"
    assert [path for _, path, _, _ in Handler.seen] == [
        "/moved",
        "/v1/agents/data",
        "/relative/moved",
        "/relative/target?x=1",
    ]


def test_a_post_follows_303_as_a_get_and_not_307(server: str) -> None:
    client = ServerClient(server)
    assert client.request("POST", "/post-303", {"a": 1}).json() == [{"name": "a1"}]
    method, path, body, headers = Handler.seen[-1]
    assert (method, path, body, "Content-Type" in headers) == ("GET", "/v1/agents/data", b"", False)
    assert json.loads(Handler.seen[0][2]) == {"a": 1}
    # A 307 would repeat the POST elsewhere: not followed (urllib did not either).
    assert client.request("POST", "/post-307", {"a": 1}).status == 307
    assert Handler.seen[-1][:2] == ("POST", "/post-307")


def test_a_redirect_loop_ends_with_its_last_answer(server: str) -> None:
    assert ServerClient(server).request("GET", "/loop").status == 302
    assert len(Handler.seen) == MAX_REDIRECTS + 1


def test_a_proxy_from_the_environment_carries_the_request(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", server)
    answer = ServerClient("http://testflinger.invalid:8080").request("GET", "/v1")
    assert answer.json() == "proxied"
    assert Handler.seen[-1][1] == "http://testflinger.invalid:8080/v1"


def test_no_answer_is_unreachable_naming_the_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable) as caught:
        ServerClient(url).request("GET", "/v1", timeout=2)
    assert str(caught.value).startswith(f"cannot reach {url}: ")
    assert "refused" in str(caught.value).lower()
