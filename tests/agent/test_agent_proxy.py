"""tf-agent reaches its server through the proxy the environment names, as upstream's agent
(requests) does: HTTP_PROXY/HTTPS_PROXY/ALL_PROXY/NO_PROXY, CONNECT for https."""

from __future__ import annotations

import base64
import http.client
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from fixtures_agent import job
from test_agent_wire import _self_signed

from multiagent.agent import proxy
from multiagent.agent.client import Client

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "request_method")


class _Relay(BaseHTTPRequestHandler):
    """A forward proxy: absolute-form requests are re-sent, CONNECT opens a tunnel."""

    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_CONNECT(self) -> None:
        self.server.seen.append(("CONNECT", self.path, self.headers.get("Proxy-Authorization")))
        host, _, port = self.path.rpartition(":")
        upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        self.send_response(200)
        self.end_headers()
        sockets = [self.connection, upstream]
        try:
            while True:
                ready, _, _ = select.select(sockets, [], [], 10)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    (upstream if sock is self.connection else self.connection).sendall(data)
        finally:
            upstream.close()
            self.close_connection = True

    def _forward(self) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Proxy-Authorization")))
        assert self.path.startswith("http://"), self.path
        netloc, _, path = self.path[len("http://") :].partition("/")
        host, _, port = netloc.rpartition(":")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        skip = {"proxy-authorization", "connection", "host", "content-length"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request(self.command, "/" + path, body or None, headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _forward


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, str, str | None]]


@pytest.fixture
def forward_proxy() -> Iterator[_ProxyServer]:
    """A forward proxy on 127.0.0.1; `.seen` lists (method, target, Proxy-Authorization)."""
    server = _ProxyServer(("127.0.0.1", 0), _Relay)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.parametrize(
    "env,url",
    [
        ({"HTTP_PROXY": "http://p:3128"}, "http://tf.example:8000"),
        ({"HTTP_PROXY": "http://p:3128", "http_proxy": ""}, "http://tf.example"),
        ({"http_proxy": "http://low:1", "HTTP_PROXY": "http://up:2"}, "http://tf.example"),
        ({"HTTPS_PROXY": "p2:8080"}, "https://tf.example"),
        ({"HTTP_PROXY": "http://p:3128"}, "https://tf.example"),
        ({"ALL_PROXY": "http://all:1"}, "http://tf.example"),
        ({"ALL_PROXY": "http://all:1", "HTTPS_PROXY": "http://s:2"}, "https://tf.example"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "example"}, "http://tf.example"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": ".example"}, "http://tf.example"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "other.org, tf.example"}, "http://tf.example"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "f.example"}, "http://tf.example"),
        ({"HTTP_PROXY": "http://p:1", "no_proxy": "TF.Example"}, "http://tf.example"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "tf.example:8000"}, "http://tf.example:8000"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "tf.example:8000"}, "http://tf.example:9000"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "*"}, "http://tf.example"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "127.0.0.0/8"}, "http://127.0.0.1:8000"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, "http://127.0.0.1:8000"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:8000"),
        (
            {"HTTP_PROXY": "http://p:1", "no_proxy": "", "NO_PROXY": "tf.example"},
            "http://tf.example",
        ),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "localhost"}, "http://127.0.0.1:8000"),
        ({"HTTP_PROXY": "http://p:1", "REQUEST_METHOD": "GET"}, "http://tf.example"),
    ],
)
def test_proxy_choice_matches_requests(monkeypatch, env, url):
    _clean_env(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from multiagent.agent.wire import split_address

    expected = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    if expected is not None and "://" not in expected:
        expected = f"http://{expected}"
    chosen = proxy.for_server(*split_address(url))
    assert (chosen.url if chosen else None) == expected


def test_proxy_credentials_and_default_port():
    chosen = proxy.parse("http://lab%20user:p%40ss@proxy.lab")
    assert (chosen.host, chosen.port) == ("proxy.lab", 80)
    assert chosen.authorization == "Basic " + base64.b64encode(b"lab user:p@ss").decode()


@pytest.mark.parametrize("bypass", [False, True])
def test_agent_job_goes_through_http_proxy_unless_no_proxy(
    shared_server, make_agent, forward_proxy, bypass
):
    proxy_url = f"http://127.0.0.1:{forward_proxy.server_port}"
    env = {"HTTP_PROXY": proxy_url, "http_proxy": proxy_url, "NO_PROXY": "", "no_proxy": ""}
    if bypass:
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
    agent = make_agent(shared_server.url, test_command="echo through the proxy")
    agent.start(env=env)
    job_id = shared_server.submit(job(agent, "x"))
    shared_server.wait_job_state(job_id, {"complete"}, timeout=30)
    agent.wait_status(lambda s: s["job_id"] is None, 10, what="job over")
    res = shared_server.result(job_id)
    assert res["test_status"] == 0 and "through the proxy" in res["test_output"]
    targets = [target for _, target, _ in forward_proxy.seen]
    if bypass:
        assert targets == []
    else:
        assert f"{shared_server.url}/v1/result/{job_id}" in targets
        assert any(t.startswith(f"{shared_server.url}/v1/job?") for t in targets)


def test_https_server_through_connect_with_proxy_credentials(tmp_path, monkeypatch, forward_proxy):
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    heads: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += tls.recv(1)
            heads.append(head)
            body = b'{"state": "waiting"}'
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    _clean_env(monkeypatch)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("HTTPS_PROXY", f"http://lab:s3cret@127.0.0.1:{forward_proxy.server_port}")
    try:
        client = Client(f"https://localhost:{port}", "dev1", timeout=10)
        assert client.get_agent_data() == {"state": "waiting"}
        client.close()
    finally:
        listener.close()
        thread.join(5)
    auth = "Basic " + base64.b64encode(b"lab:s3cret").decode()
    assert forward_proxy.seen == [("CONNECT", f"localhost:{port}", auth)]
    assert heads and heads[0].startswith(b"GET /v1/agents/data/dev1 HTTP/1.1\r\n")
    assert b"proxy-authorization" not in heads[0].lower()  # never sent to the server
