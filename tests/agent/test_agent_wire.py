"""The agent's HTTP/1.1 connection and URL helpers (multiagent/agent/wire.py) against real
sockets: a loopback server that answers with exactly the bytes a test gives it."""

from __future__ import annotations

import io
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiagent.agent.client import Client, ServerUnreachable
from multiagent.agent.wire import (
    BadResponse,
    Connection,
    RemoteDisconnected,
    query,
    quote,
    split_address,
)


@contextmanager
def raw_server(*answers: bytes) -> Iterator[tuple[int, list[bytes]]]:
    """Accepts one connection; for each answer, reads one request (to its blank line and
    Content-Length body) and sends the answer's bytes; then closes. Yields the port and
    the requests seen."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            reader = conn.makefile("rb")
            for answer in answers:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                seen.append(head + reader.read(length))
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        listener.close()
        thread.join(5)


def test_content_length_keep_alive_and_request_bytes():
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=b; Path=/\r\n\r\nhello"
    with raw_server(ok, ok) as (port, seen):
        conn = Connection("http", "127.0.0.1", port, 5)
        first = conn.request("POST", "/v1/x", b'{"a": 1}', {"Content-Type": "application/json"})
        assert (first.status, first.read(), first.will_close) == (200, b"hello", False)
        assert ("set-cookie", "a=b; Path=/") in first.headers
        sock = conn.sock
        second = conn.request("GET", "/v1/y", None, {})
        assert second.read() == b"hello" and conn.sock is sock  # the same connection
        conn.close()
    head, _, body = seen[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/x HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}".encode() in lines
    assert b"Content-Length: 8" in lines and body == b'{"a": 1}'
    assert seen[1].startswith(b"GET /v1/y HTTP/1.1\r\n")


def test_chunked_body_with_extensions_and_trailers_read_in_small_pieces():
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;name=x\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    with raw_server(answer, b"HTTP/1.1 204 No Content\r\n\r\n") as (port, _):
        conn = Connection("http", "127.0.0.1", port, 5)
        reply = conn.request("GET", "/", None, {})
        pieces = []
        while piece := reply.read(3):
            pieces.append(piece)
        assert b"".join(pieces) == b"wikipedia"
        # The connection is left at the next answer's first byte.
        assert conn.request("GET", "/", None, {}).status == 204


def test_interim_answers_skipped_and_body_to_close():
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nServer: old\r\n\r\nall of it"
    with raw_server(answer) as (port, _):
        conn = Connection("http", "127.0.0.1", port, 5)
        reply = conn.request("GET", "/", None, {})
        assert reply.status == 200 and reply.will_close
        assert reply.read() == b"all of it"


@pytest.mark.parametrize(
    "answer, error",
    [
        (b"", RemoteDisconnected),
        (b"SSH-2.0-OpenSSH\r\n\r\n", BadResponse),
        (b"HTTP/1.1 abc OK\r\n\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", BadResponse),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", BadResponse),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY", BadResponse),
    ],
)
def test_a_broken_answer_is_an_oserror_never_a_hang(answer, error):
    with raw_server(answer) as (port, _):
        conn = Connection("http", "127.0.0.1", port, 5)
        with pytest.raises(error):
            conn.request("GET", "/", None, {}).read()
        conn.close()


def test_client_turns_a_broken_answer_into_server_unreachable():
    with raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n") as (port, _):
        client = Client(f"http://127.0.0.1:{port}", "w1", timeout=5)
        with pytest.raises(ServerUnreachable):
            client.request("GET", "/v1")


def test_streamed_file_body_is_sent_whole():
    data = bytes(range(256)) * 1000
    with raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") as (port, seen):
        conn = Connection("http", "127.0.0.1", port, 5)
        body = io.BytesIO(data)
        headers = {"Content-Length": str(len(data))}
        assert conn.request("POST", "/up", body, headers).status == 200
    assert seen[0].endswith(data)


def test_header_values_with_line_breaks_are_refused():
    conn = Connection("http", "127.0.0.1", 9, 1)
    with pytest.raises(ValueError, match="line breaks"):
        conn.request("GET", "/", None, {"Authorization": "Bearer x\r\nX-Evil: 1"})
    assert conn.sock is None  # refused before connecting


def test_connection_refused_is_an_oserror():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with pytest.raises(OSError):
        Connection("http", "127.0.0.1", port, 2).request("GET", "/", None, {})


# -- URL helpers: the same answers as urllib.parse, whatever the text ------------------
@given(st.text())
def test_quote_matches_urllib(text):
    assert quote(text) == urllib.parse.quote(text, safe="")


@given(st.lists(st.tuples(st.text(), st.text()), max_size=4))
def test_query_matches_urlencode(pairs):
    assert query(pairs) == urllib.parse.urlencode(pairs)


@given(
    st.sampled_from(["http", "https", "HTTP"]),
    st.sampled_from(["127.0.0.1", "Lab-Server.example", "[::1]", "[FE80::1]", "h"]),
    st.one_of(st.none(), st.integers(1, 65535)),
    st.sampled_from(["", "/", "/prefix/v1", "?q=1", "#f"]),
    st.booleans(),
)
def test_split_address_matches_urlsplit(scheme, host, port, tail, user):
    address = f"{scheme}://{'me@' if user else ''}{host}{f':{port}' if port else ''}{tail}"
    parts = urllib.parse.urlsplit(address)
    assert split_address(address) == (parts.scheme, parts.hostname, parts.port)


def test_split_address_without_scheme_and_bad_ports():
    assert split_address("lab:8585") == ("http", "lab", 8585)
    for bad in ("http://h:0", "http://h:65536", "http://h:80x", "http://h:-1", "http://h:٣"):
        with pytest.raises(ValueError, match="bad port"):
            split_address(bad)


def _self_signed(folder):
    """A certificate for localhost and 127.0.0.1, and its key (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_https_verifies_the_server_and_talks_over_tls(tmp_path, monkeypatch):
    """An https server is reached through `socket` and `ssl` (the plain path uses
    `_socket`): its certificate is checked, then the same framing applies."""
    import ssl

    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            try:
                conn, _ = listener.accept()
                with context.wrap_socket(conn, server_side=True) as tls:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        head += tls.recv(1)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
            except (OSError, ssl.SSLError):
                continue  # the untrusted attempt: the client hangs up during the handshake

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        untrusted = Connection("https", "localhost", port, 5)
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusted.request("GET", "/v1", None, {})
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        conn = Connection("https", "localhost", port, 5)
        reply = conn.request("GET", "/v1", None, {})
        assert (reply.status, reply.read()) == (200, b"secret")
        conn.close()
    finally:
        listener.close()
        thread.join(5)
