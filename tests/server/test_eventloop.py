"""waitress on the epoll loop: many kept-alive connections, reused fds, big answers,
slow and pipelined requests, and waitress' sweep of idle connections, on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from waitress import create_server, wasyncore

from multiagent.server.eventloop import EpollLoop, WatchedMap

BIG = b"x" * 300_000  # several times waitress' send_bytes and its buffers


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/none":
        start_response("204 No Content", [])
        return []
    if path == "/huge":
        start_response("200 OK", [("Content-Length", str(40 * len(BIG)))])
        return (BIG for _ in range(40))  # written as made: the worker outruns the reader
    body = BIG if path == "/big" else path.encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


class Served:
    def __init__(self, **adjustments: Any) -> None:
        self.map = WatchedMap()
        adjustments.setdefault("connection_limit", 1000)  # waitress' default is 100
        self.server = create_server(
            app, map=self.map, host="127.0.0.1", port=0, threads=2, **adjustments
        )
        self.server.asyncore = EpollLoop
        self.port = self.server.effective_port
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        stop(self.server, self.map, self.thread)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def stop(server: Any, sockets: dict[int, Any], thread: threading.Thread) -> None:
    """Close every socket from the loop's own thread (a trigger's thunk): the loop ends
    when none is left, as waitress' does."""
    server.trigger.pull_trigger(lambda: wasyncore.close_all(sockets))
    thread.join(10)
    assert not thread.is_alive(), "the loop did not stop"
    server.task_dispatcher.shutdown()


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served()
    yield s
    s.stop()


_readers: dict[int, Any] = {}


def ask(conn: socket.socket, path: str) -> tuple[int, bytes]:
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return answer(conn)


def hang_up(conn: socket.socket) -> None:
    reader = _readers.pop(id(conn), None)
    if reader is not None:
        reader[1].close()  # the socket closes with its last file
    conn.close()


def answer(conn: socket.socket) -> tuple[int, bytes]:
    """The next answer on `conn` (answers may arrive together: read as a stream)."""
    reader = _readers.get(id(conn))
    if reader is None or reader[0] is not conn:
        reader = _readers[id(conn)] = (conn, conn.makefile("rb"))
    stream = reader[1]
    status_line = stream.readline()
    assert status_line, "connection closed before an answer"
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = stream.read(length) if length else b""
    assert len(body) == length, "connection closed in the body"
    return int(status_line.split()[1]), body


def test_many_kept_alive_connections_each_answered(served: Served):
    conns = [served.connect() for _ in range(200)]
    for rnd in range(3):
        # in turn, then in the reverse order: connections idle for a while are asked again
        for i, conn in enumerate(conns if rnd % 2 == 0 else reversed(conns)):
            assert ask(conn, f"/c{i}") == (200, f"/c{i}".encode())
    # waitress closes a connection after a 204 (no Content-Length): the next is served
    assert ask(conns[7], "/none") == (204, b"")
    assert conns[7].recv(1) == b""
    assert ask(conns[8], "/after") == (200, b"/after")
    for conn in conns:
        hang_up(conn)


def test_a_closed_connections_fd_reused_by_the_next(served: Served):
    keep = served.connect()
    for i in range(30):
        conn = served.connect()  # the fd the last one had, on the server too
        assert ask(conn, f"/n{i}") == (200, f"/n{i}".encode())
        open_before = len(served.map)
        hang_up(conn)
        deadline = time.monotonic() + 10
        while len(served.map) >= open_before and time.monotonic() < deadline:
            time.sleep(0.005)  # until the server has closed its side, freeing the fd
        assert len(served.map) < open_before, "the server kept a closed connection"
    assert ask(keep, "/kept") == (200, b"/kept")
    hang_up(keep)


@pytest.mark.parametrize("lookahead", [0, 5])
def test_big_answers_and_pipelined_requests(lookahead: int):
    # lookahead: waitress reads further requests while one is served (readable, busy)
    served = Served(channel_request_lookahead=lookahead)
    try:
        _big_and_pipelined(served)
    finally:
        served.stop()


def _big_and_pipelined(served: Served) -> None:
    conn = served.connect()
    assert ask(conn, "/big") == (200, BIG)
    conn.sendall(b"".join(f"GET /p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(5)))
    assert [answer(conn) for _ in range(5)] == [(200, f"/p{i}".encode()) for i in range(5)]
    other = served.connect()
    other.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer(other) == (200, BIG)
    assert answer(other) == (200, b"/small")
    hang_up(conn)
    hang_up(other)


def test_an_answer_past_the_high_watermark_to_a_slow_reader():
    """The worker waits for the loop to send once the buffer is past the watermark."""
    served = Served(outbuf_high_watermark=200_000)
    try:
        conn = served.connect()
        other = served.connect()
        conn.sendall(b"GET /huge HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ask(other, "/meanwhile") == (200, b"/meanwhile")
        assert answer(conn) == (200, BIG * 40)
        hang_up(conn)
        hang_up(other)
    finally:
        served.stop()


def test_a_slow_request_while_others_are_answered(served: Served):
    slow = served.connect()
    slow.sendall(b"GET /slow HTTP/1.1\r\n")
    quick = served.connect()
    assert ask(quick, "/quick") == (200, b"/quick")
    slow.sendall(b"Host: x\r\n\r\n")
    assert answer(slow) == (200, b"/slow")
    hang_up(slow)
    hang_up(quick)


def test_waitress_sweep_closes_idle_connections():
    s = Served(channel_timeout=1, cleanup_interval=1)
    try:
        idle = s.connect()
        busy = s.connect()
        assert ask(idle, "/a") == (200, b"/a")
        deadline = time.monotonic() + 20
        closed = False
        while time.monotonic() < deadline and not closed:
            assert ask(busy, "/b") == (200, b"/b")  # keeps busy's activity recent
            idle.settimeout(0.2)
            try:
                closed = idle.recv(1) == b""
            except TimeoutError:
                pass
        assert closed, "waitress' sweep did not close the idle connection"
        hang_up(idle)
        hang_up(busy)
    finally:
        s.stop()


def test_a_plain_map_runs_waitress_own_loop():
    server = create_server(app, host="127.0.0.1", port=0, threads=1)
    server.asyncore = EpollLoop
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        conn = socket.create_connection(("127.0.0.1", server.effective_port), timeout=10)
        assert ask(conn, "/plain") == (200, b"/plain")
        hang_up(conn)
    finally:
        stop(server, server._map, thread)
