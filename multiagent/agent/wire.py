"""HTTP/1.1 on one socket, and the URL pieces the agent's REST client needs; no more.

A request with a bytes or file body; a response framed by Content-Length, chunked
transfer coding, or the server closing the connection; keep-alive otherwise. http.client
would do the same but brings the email package for its header parsing: ~1.5 MiB of every
idle agent's private memory and ~5 ms of its start-up CPU, paid 500 times on a big host
(bench/). Limits are http.client's: a line at most 64 KiB, at most 100 header lines.
urllib.parse is left out for the same reason (it imports ipaddress: ~0.4 MiB together);
the three helpers below give what its urlsplit, quote and urlencode gave here. A plain
http connection is made with `_socket`, which `socket` wraps: importing `socket` costs
~3 ms of start-up CPU (its enums, selectors); https needs `socket` for `ssl` anyway.
"""

from __future__ import annotations

import _socket  # the C module: `socket` builds enums and loads selectors at import
import io

TYPE_CHECKING = False  # no typing import at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any

MAX_LINE = 65536
MAX_HEADERS = 100
CHUNK = 1 << 16
DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def split_address(address: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of `[scheme://][user@]host[:port][/path]`, lower-cased; an
    IPv6 host without its brackets. ValueError for a port that is not 1-65535."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "http", address
    netloc = rest
    for end in "/?#":
        netloc = netloc.split(end, 1)[0]
    netloc = netloc.rpartition("@")[2]
    if netloc.startswith("["):
        host, _, tail = netloc[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = netloc.partition(":")
    port = None
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise ValueError(f"bad port {port_text!r} in {address!r}")
        port = int(port_text)
    return (scheme or "http").lower(), host.lower(), port


def quote(text: str, plus: bool = False) -> str:
    """Percent-encoded UTF-8 of `text`, all but unreserved characters (RFC 3986); a space
    as `+` if `plus` (a query's form encoding)."""
    out = []
    for byte in text.encode():
        if byte in _UNRESERVED:
            out.append(chr(byte))
        elif plus and byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def query(pairs: list[tuple[str, str]]) -> str:
    """`k=v&k=v`, form-encoded."""
    return "&".join(f"{quote(k, True)}={quote(v, True)}" for k, v in pairs)


class Proxy:
    """An http:// proxy (proxy.py says which): where to connect, the Proxy-Authorization."""

    __slots__ = ("url", "scheme", "host", "port", "authorization")

    def __init__(self, url: str, scheme: str, host: str, port: int, authorization: str | None):
        self.url, self.scheme, self.host, self.port = url, scheme, host, port
        self.authorization = authorization


class BadResponse(OSError):
    """The server's answer is not HTTP/1.x as framed above."""


class RemoteDisconnected(ConnectionResetError):
    """The server closed the connection before the first byte of a response."""


class Reply:
    """One response: status, headers (names lower-cased) and a body read on demand."""

    def __init__(self, conn: Connection, status: int, headers: list[tuple[str, str]], head: bool):
        self.status = status
        self.headers = headers
        self._conn = conn
        fields: dict[str, str] = {}
        for name, value in headers:
            fields[name] = f"{fields[name]}, {value}" if name in fields else value
        self.will_close = "close" in fields.get("connection", "").lower()
        self._chunked = False
        self._left: int | None = None  # bytes of body (or of the current chunk) to read
        self._done = head or status in (204, 304) or 100 <= status < 200
        if self._done:
            return
        if "chunked" in fields.get("transfer-encoding", "").lower():
            self._chunked = True
            self._left = 0
        elif "content-length" in fields:
            try:
                self._left = int(fields["content-length"])
            except ValueError:
                raise BadResponse(f"bad Content-Length {fields['content-length']!r}") from None
            if self._left < 0:
                raise BadResponse(f"bad Content-Length {self._left}")
            self._done = self._left == 0
        else:
            self.will_close = True  # the body ends where the connection does

    def read(self, amount: int | None = None) -> bytes:
        """Up to `amount` bytes of the body (all of it if None); b"" at its end."""
        if amount is None:
            parts: list[bytes] = []
            while True:
                part = self.read(CHUNK)
                if not part:
                    return b"".join(parts)
                parts.append(part)
        if self._done:
            return b""
        if self._chunked:
            return self._read_chunked(amount)
        if self._left is None:
            data = self._conn.file.read1(amount)
            self._done = not data
            return data
        data = self._conn.file.read(min(amount, self._left))
        if not data:
            raise BadResponse("connection closed inside the body")
        self._left -= len(data)
        self._done = self._left == 0
        return data

    def _read_chunked(self, amount: int) -> bytes:
        file = self._conn.file
        if self._left == 0:
            size_line = _line(file).split(b";", 1)[0].strip()
            try:
                self._left = int(size_line, 16)
            except ValueError:
                raise BadResponse(f"bad chunk size {size_line[:40]!r}") from None
            if self._left < 0:
                raise BadResponse("bad chunk size")
            if self._left == 0:
                while _line(file) not in (b"\r\n", b"\n"):  # trailer fields, ignored
                    pass
                self._done = True
                return b""
        assert self._left is not None
        data = file.read(min(amount, self._left))
        if not data:
            raise BadResponse("connection closed inside a chunk")
        self._left -= len(data)
        if self._left == 0 and file.read(2) not in (b"\r\n",):
            raise BadResponse("chunk not followed by CRLF")
        return data


class Connection:
    """One persistent connection to scheme://host:port, opened on first use; through an
    http:// `proxy` if given (absolute-form requests for http, a CONNECT tunnel for https).
    Scheme "unix": `host` is the path of a unix socket."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int | None,
        timeout: float,
        proxy: Proxy | None = None,
    ):
        self.scheme = scheme
        self.proxy = proxy
        self.host = host
        self.port = port or DEFAULT_PORTS.get(scheme, 80)
        self.timeout = timeout
        self.sock: Any = None
        self.file: Any = None
        shown = f"[{host}]" if ":" in host else host
        default = port in (None, DEFAULT_PORTS.get(scheme))
        self._host_header = shown if default else f"{shown}:{port}"
        if scheme == "unix":  # `host` is the socket's path (tf-fleet's supervisord client)
            self._host_header = "localhost"

    def set_timeout(self, timeout: float) -> None:
        self.timeout = timeout
        if self.sock is not None:
            self.sock.settimeout(timeout)

    def _open(self) -> None:
        if self.scheme == "unix":
            sock = connect_unix(self.host, self.timeout)
        else:
            sock = self._connect_tcp()
        if self.scheme == "https":
            import socket
            import ssl  # only for an https server: libssl costs ~4 MB

            plain = socket.socket(fileno=sock.detach())  # ssl wraps socket.socket only
            try:
                plain.settimeout(self.timeout)
                tls = ssl.create_default_context().wrap_socket(plain, server_hostname=self.host)
            except BaseException:
                plain.close()
                raise
            self.sock, self.file = tls, tls.makefile("rb")
            return
        self.sock, self.file = sock, io.BufferedReader(_Receiver(sock), CHUNK)

    def _connect_tcp(self) -> Any:
        """A TCP socket to the server, or to the proxy (a tunnel through it for https)."""
        proxy = self.proxy
        if proxy is None:
            return connect(_ascii(self.host), self.port, self.timeout)
        if proxy.scheme != "http":
            raise OSError(f"proxy {proxy.url}: only http:// proxies are supported")
        sock = connect(_ascii(proxy.host), proxy.port, self.timeout)
        if self.scheme != "https":
            return sock
        try:
            self._tunnel(sock, proxy)
        except BaseException:
            sock.close()
            raise
        return sock

    def _tunnel(self, sock: Any, proxy: Proxy) -> None:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        target = f"{shown}:{self.port}"
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        if proxy.authorization:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        # Byte by byte up to the blank line: nothing of the tunnel may be read here.
        head = b""
        while not head.endswith(b"\r\n\r\n") and not head.endswith(b"\n\n"):
            byte = sock.recv(1)
            if not byte:
                raise BadResponse(f"proxy {proxy.url} closed the connection during CONNECT")
            head += byte
            if len(head) > MAX_LINE:
                raise BadResponse(f"proxy {proxy.url}: CONNECT answer too long")
        status = head.split(b"\n", 1)[0].decode("latin-1").strip()
        parts = status.split(None, 2)
        if len(parts) < 2 or parts[1] != "200":
            raise ConnectionRefusedError(f"proxy {proxy.url} refused CONNECT {target}: {status}")

    def close(self) -> None:
        file, sock = self.file, self.sock
        self.file = self.sock = None
        for part in (file, sock):
            if part is not None:
                try:
                    part.close()
                except OSError:
                    pass

    def request(self, method: str, path: str, body: Any, headers: dict[str, str]) -> Reply:
        """Send one request and read the response's status and headers. `body` is None,
        bytes, or a file-like object with a length (streamed in 64 KiB pieces)."""
        proxied = self.proxy is not None and self.scheme == "http"
        target = f"http://{self._host_header}{path}" if proxied else path
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}"]
        lines.append("Accept-Encoding: identity")
        if proxied and self.proxy is not None and self.proxy.authorization:
            lines.append(f"Proxy-Authorization: {self.proxy.authorization}")
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r}: line breaks are not allowed")
            lines.append(f"{name}: {value}")
        if body is not None and not any(k.lower() == "content-length" for k in headers):
            lines.append(f"Content-Length: {len(body)}")
        elif body is None and method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: 0")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.sock is None:
            self._open()
        assert self.sock is not None
        if body is None or isinstance(body, (bytes, bytearray)):
            self.sock.sendall(head + bytes(body or b""))
        else:
            self.sock.sendall(head)
            while True:
                piece = body.read(CHUNK)
                if not piece:
                    break
                self.sock.sendall(piece)
        return self._reply(method == "HEAD")

    def _reply(self, head: bool) -> Reply:
        while True:
            status, version = self._status_line()
            headers = self._headers()
            if status != 100 and not 102 <= status < 200:  # skip interim answers
                break
        reply = Reply(self, status, headers, head)
        if version == "HTTP/1.0" and not any(
            n == "connection" and "keep-alive" in v.lower() for n, v in headers
        ):
            reply.will_close = True
        return reply

    def _status_line(self) -> tuple[int, str]:
        line = _line(self.file)
        if not line:
            raise RemoteDisconnected("the server closed the connection without a response")
        parts = line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise BadResponse(f"bad status line {line[:80]!r}")
        status = int(parts[1])
        if not 100 <= status <= 999:
            raise BadResponse(f"bad status {status}")
        return status, parts[0]

    def _headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        while True:
            line = _line(self.file)
            if line in (b"\r\n", b"\n"):
                return headers
            if not line:
                raise BadResponse("connection closed inside the headers")
            if len(headers) >= MAX_HEADERS:
                raise BadResponse(f"more than {MAX_HEADERS} header lines")
            text = line.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and headers:  # obsolete line folding
                name, value = headers[-1]
                headers[-1] = (name, f"{value} {text.strip()}")
                continue
            name, sep, value = text.partition(":")
            if not sep:
                raise BadResponse(f"bad header line {text[:80]!r}")
            headers.append((name.strip().lower(), value.strip()))


def _ascii(host: str) -> str | bytes:
    # A str host is IDNA-encoded by getaddrinfo, which imports unicodedata (~1 MiB);
    # an ASCII name or address needs no encoding.
    return host.encode("ascii") if host.isascii() else host


def _line(file: Any) -> bytes:
    line: bytes = file.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise BadResponse("a line longer than 64 KiB")
    return line


def connect(host: str | bytes, port: int, timeout: float) -> Any:
    """A connected TCP `_socket.socket` to the first address of `host` that answers (what
    socket.create_connection does); the last address's error if none does."""
    error: OSError | None = None
    for family, kind, proto, _, address in _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"no address for {host!r}")


def connect_unix(path: str, timeout: float) -> Any:
    """A `_socket.socket` connected to the unix socket at `path`."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


class _Receiver(io.RawIOBase):
    """The reading side of a `_socket.socket`, for io.BufferedReader (socket.SocketIO's
    part that the client uses); the socket's timeout applies to each read."""

    def __init__(self, sock: Any):
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return int(self._sock.recv_into(buffer))

    def close(self) -> None:
        self._sock = None  # the Connection closes the socket itself
        super().close()
