"""XML-RPC as supervisord speaks it, over the agent's HTTP/1.1 connection (`wire`).

Hand-written because of a measured figure: `xmlrpc.client` imports `http.client`, which
brings the email package and ssl: ~30 ms of every command's start-up (`python -X
importtime`), about a tenth of `tf-fleet status` at 500 agents and of `restart --safe`,
whose targets (bench/) it stood in the way of. What supervisord sends and takes is small:
calls with strings, numbers, booleans, lists and dicts; answers of the same, or a fault.
"""

from __future__ import annotations

from typing import Any
from xml.parsers import expat

from multiagent.agent.wire import Connection, split_address

PATH = "/RPC2"
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


class Fault(Exception):
    """supervisord refused the call: its fault code and string."""

    def __init__(self, code: int, text: str):
        super().__init__(f"<Fault {code}: {text!r}>")
        self.code = code
        self.text = text


class ProtocolError(OSError):
    """The answer is not an XML-RPC answer (an HTTP error status, or not XML-RPC)."""


def call_body(method: str, params: tuple[Any, ...]) -> bytes:
    out = ["<?xml version='1.0'?>\n<methodCall>\n<methodName>", _text(method), "</methodName>\n"]
    out.append("<params>\n")
    for param in params:
        out.append("<param>\n")
        _value(param, out)
        out.append("</param>\n")
    out.append("</params>\n</methodCall>\n")
    return "".join(out).encode()


def _text(text: str) -> str:
    return text.translate(_ESCAPES)


def _value(value: Any, out: list[str]) -> None:
    out.append("<value>")
    if isinstance(value, bool):  # before int: a bool is an int
        out.append(f"<boolean>{int(value)}</boolean>")
    elif isinstance(value, int):
        out.append(f"<int>{value}</int>")
    elif isinstance(value, float):
        out.append(f"<double>{value!r}</double>")
    elif isinstance(value, str):
        out.append(f"<string>{_text(value)}</string>")
    elif isinstance(value, (list, tuple)):
        out.append("<array><data>\n")
        for item in value:
            _value(item, out)
        out.append("</data></array>")
    elif isinstance(value, dict):
        out.append("<struct>\n")
        for key, item in value.items():
            out.append(f"<member>\n<name>{_text(str(key))}</name>\n")
            _value(item, out)
            out.append("</member>\n")
        out.append("</struct>")
    else:
        raise TypeError(f"cannot send {type(value).__name__} over XML-RPC")
    out.append("</value>\n")


class _Reader:
    """Values in the order their elements end; an array or a struct gathers those that
    ended since it began. A <value> with no typed element inside holds a string."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.opened: list[int] = []  # where each open array or struct began in `values`
        self.text: list[str] = []
        self.bare = False  # inside a <value> that has had no typed element yet
        self.fault = False

    def start(self, tag: str, _attrs: Any) -> None:
        if tag in ("array", "struct"):
            self.opened.append(len(self.values))
        elif tag == "fault":
            self.fault = True
        self.bare = tag == "value"
        self.text = []

    def data(self, text: str) -> None:
        self.text.append(text)

    def end(self, tag: str) -> None:
        text = "".join(self.text)
        self.text = []
        scalar = _SCALARS.get(tag)
        if scalar is not None:
            self.values.append(scalar(text))
        elif tag in ("array", "struct"):
            begin = self.opened.pop()
            items = self.values[begin:]
            del self.values[begin:]
            pairs = zip(items[::2], items[1::2], strict=True) if tag == "struct" else None
            self.values.append(items if pairs is None else dict(pairs))
        elif tag == "value" and self.bare:
            self.values.append(text)
        elif tag not in _FRAMES:
            raise ValueError(f"unexpected element <{tag}>")
        self.bare = False


def _boolean(text: str) -> bool:
    if text.strip() not in ("0", "1"):
        raise ValueError(f"bad boolean {text!r}")
    return text.strip() == "1"


_SCALARS: dict[str, Any] = {
    "string": str,
    "name": str,
    "int": int,
    "i4": int,
    "i8": int,
    "boolean": _boolean,
    "double": float,
    "nil": lambda _text: None,
}
_FRAMES = frozenset(("value", "data", "member", "param", "params", "fault", "methodResponse"))


def answer_of(body: bytes) -> Any:
    """The value of a methodResponse; Fault for a fault, ProtocolError for anything that
    is not an XML-RPC answer."""
    reader = _Reader()
    parser = expat.ParserCreate("utf-8")
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.data
    parser.buffer_text = True
    try:
        parser.Parse(body, True)
    except (expat.ExpatError, ValueError, IndexError) as exc:
        raise ProtocolError(f"not an XML-RPC answer: {exc}") from None
    if len(reader.values) != 1 or reader.opened:
        raise ProtocolError(f"not an XML-RPC answer: {len(reader.values)} values")
    value = reader.values[0]
    if reader.fault:
        if not isinstance(value, dict):
            raise ProtocolError("not an XML-RPC answer: a fault without its struct")
        raise Fault(int(value.get("faultCode", 0)), str(value.get("faultString", "")))
    return value


class Channel:
    """Calls on one kept-alive connection to supervisord (`unix://PATH` or
    `http://HOST:PORT`); every read and write bounded by `timeout`."""

    def __init__(self, url: str, auth: str | None, timeout: float):
        if url.startswith("unix://"):
            self.conn = Connection("unix", url[len("unix://") :], None, timeout)
        else:
            scheme, host, port = split_address(url)
            self.conn = Connection(scheme, host, port, timeout)
        self.headers = {"Content-Type": "text/xml"}
        if auth:
            self.headers["Authorization"] = f"Basic {auth}"

    def call(self, method: str, *params: Any) -> Any:
        body = call_body(method, params)
        reused = self.conn.sock is not None  # kept alive: supervisord may have closed it
        try:
            status, data = self._post(body)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            if not reused:
                raise
            # As xmlrpc.client does: a connection supervisord closed since (a reload, a
            # restart) is opened again once; the call had not reached it.
            status, data = self._post(body)
        if status != 200:
            raise ProtocolError(f"HTTP {status} from {PATH}")
        return answer_of(data)

    def _post(self, body: bytes) -> tuple[int, bytes]:
        try:
            reply = self.conn.request("POST", PATH, body, self.headers)
            data = reply.read()
        except BaseException:
            self.conn.close()
            raise
        if reply.will_close:
            self.conn.close()
        return reply.status, data

    def close(self) -> None:
        self.conn.close()
