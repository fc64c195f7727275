"""tf-fleet's XML-RPC against the standard library's: what one writes the other reads."""

from __future__ import annotations

import socket
import threading
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from multiagent.fleet.supervisord.xmlrpc_wire import (
    Channel,
    Fault,
    ProtocolError,
    answer_of,
    call_body,
)

VALUES: list[Any] = [
    "agent-01",
    "",
    "a <b> & 'c' \"d\" ünï ✓\n\ttab",
    0,
    -7,
    2**31 - 1,
    True,
    False,
    1.5,
    [],
    {},
    [1, "two", [3, {"four": 4}], {"five": [5.0, False]}],
    {"name": "x", "pid": 12, "statename": "RUNNING", "spawnerr": "", "nested": {"a": []}},
]


@pytest.mark.parametrize("value", VALUES)
def test_a_call_reads_back_in_the_standard_library(value: Any) -> None:
    params, method = xmlrpc.client.loads(call_body("supervisor.test", (value, "x")))
    assert method == "supervisor.test"
    assert params == (value, "x")


@pytest.mark.parametrize("value", VALUES)
def test_an_answer_of_the_standard_library_reads_back(value: Any) -> None:
    assert answer_of(xmlrpc.client.dumps((value,), methodresponse=True).encode()) == value


def test_a_bare_value_is_a_string_and_typed_ones_keep_their_type() -> None:
    body = (
        b"<?xml version='1.0'?><methodResponse><params><param><value><array><data>"
        b"<value>bare</value><value><i4>4</i4></value><value><i8>8</i8></value>"
        b"<value><nil/></value><value><string></string></value>"
        b"</data></array></value></param></params></methodResponse>"
    )
    assert answer_of(body) == ["bare", 4, 8, None, ""]


def test_a_fault_is_raised_with_its_code_and_text() -> None:
    body = xmlrpc.client.dumps(xmlrpc.client.Fault(10, "BAD_NAME: agent-9"), methodresponse=True)
    with pytest.raises(Fault) as caught:
        answer_of(body.encode())
    assert (caught.value.code, caught.value.text) == (10, "BAD_NAME: agent-9")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<methodResponse><params></params></methodResponse>",
        b"<methodResponse><params><param><value><int>x</int></value></param></params>"
        b"</methodResponse>",
        b"<methodResponse><params><param><value><boolean>2</boolean></value></param>"
        b"</params></methodResponse>",
        b"<methodResponse><params><param><value><dateTime.iso8601>x</dateTime.iso8601>"
        b"</value></param></params></methodResponse>",
        b"<methodResponse><fault><value><int>1</int></value></fault></methodResponse>",
        b"<methodResponse><params><param><value><struct><member><name>a</name></member>"
        b"</struct></value></param></params></methodResponse>",
    ],
)
def test_anything_else_is_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        answer_of(body)


class OneShotServer:
    """A unix-socket HTTP server that answers each connection's first request and then
    closes it (as a supervisord that was restarted in between would)."""

    def __init__(self, path: Path):
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen()
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                params, _ = xmlrpc.client.loads(body)
                answer = xmlrpc.client.dumps((params,), methodresponse=True).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
                    + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def one_shot(tmp_path: Path) -> Iterator[OneShotServer]:
    server = OneShotServer(tmp_path / "s.sock")
    yield server
    server.close()


def test_a_closed_kept_alive_connection_is_opened_again_once(one_shot: OneShotServer) -> None:
    channel = Channel(f"unix://{one_shot.path}", "dXNlcjpwdw==", 5.0)
    assert channel.call("supervisor.a", "x") == ["x"]
    # The server closed the connection after its answer: the next call opens a new one.
    assert channel.call("supervisor.b", 2) == [2]
    assert len(one_shot.requests) == 2
    assert all(b"Authorization: Basic dXNlcjpwdw==" in r for r in one_shot.requests)
    channel.close()


def test_no_server_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        Channel(f"unix://{tmp_path / 'none.sock'}", None, 1.0).call("supervisor.getState")
