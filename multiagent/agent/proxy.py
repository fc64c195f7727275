"""Which proxy, if any, carries the agent's requests to its server: the environment's
HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY read as `requests` (upstream's agent's
HTTP library) reads them, so tf-agent reaches its server wherever upstream's agent does.

Rules (requests' get_environ_proxies and urllib's environment reading): a lower-case
variable wins over its upper-case twin, even when empty; `<scheme>_proxy` is tried before
`all_proxy`; the server bypasses the proxy when NO_PROXY holds `*`, the host (or
host:port) or a domain it lies in (a leading dot or not, any case), the host's IPv4
address itself, or a CIDR network holding it. A proxy URL without a scheme is
http://; only http:// proxies are spoken to (absolute-form requests; https through
CONNECT).
"""

from __future__ import annotations

import os

from multiagent.agent.wire import Proxy, split_address

TYPE_CHECKING = False  # no typing import at run time (start-up cost)
if TYPE_CHECKING:
    from collections.abc import Mapping


def _variable(env: Mapping[str, str], name: str) -> str:
    if name in env:  # lower case wins, even empty (it then turns the upper case off)
        return env[name]
    if name == "http_proxy" and "REQUEST_METHOD" in env:
        return ""  # a CGI request's Proxy header must not set the proxy (httpoxy)
    return env.get(name.upper(), "")


def for_server(
    scheme: str, host: str, port: int | None, env: Mapping[str, str] | None = None
) -> Proxy | None:
    """The proxy for scheme://host:port, or None to connect directly."""
    env = os.environ if env is None else env
    # requests reads no_proxy, then NO_PROXY if that is empty or unset.
    if _bypassed(host, port, env.get("no_proxy") or env.get("NO_PROXY") or ""):
        return None
    url = (_variable(env, f"{scheme}_proxy") or _variable(env, "all_proxy")).strip()
    return parse(url) if url else None


def parse(url: str) -> Proxy:
    """`[scheme://][user:password@]host[:port]`; ValueError for a bad port."""
    if "://" not in url:
        url = f"http://{url}"
    scheme, host, port = split_address(url)
    netloc = url.partition("://")[2].split("/", 1)[0]
    userinfo, at, _ = netloc.rpartition("@")
    authorization = None
    if at:
        import base64  # only with credentials in the proxy's URL

        user, _, password = userinfo.partition(":")
        token = f"{_unquote(user)}:{_unquote(password)}".encode()
        authorization = "Basic " + base64.b64encode(token).decode("ascii")
    return Proxy(url, scheme, host, port or (443 if scheme == "https" else 80), authorization)


def _unquote(text: str) -> str:
    parts = text.split("%")
    out = bytearray(parts[0].encode())
    for part in parts[1:]:
        try:
            out += bytes.fromhex(part[:2]) + part[2:].encode()
        except ValueError:
            out += b"%" + part.encode()
    return out.decode("utf-8", "replace")


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    entries = [e.strip().lower() for e in no_proxy.replace(" ", "").split(",") if e.strip()]
    if "*" in entries:
        return True
    address = _ipv4(host)
    if address is not None and any(
        _in_network(address, e) if "/" in e else e == host for e in entries
    ):
        return True
    with_port = f"{host}:{port}" if port else host
    return any(_name_matches(host, with_port, entry) for entry in entries)


def _name_matches(host: str, with_port: str, entry: str) -> bool:
    """The entry (less a leading dot) is the host or host:port, or a whole-label suffix."""
    bare = entry.lstrip(".")
    if not bare:
        return False
    return any(name == bare or name.endswith("." + bare) for name in (host, with_port))


def _ipv4(text: str) -> int | None:
    import _socket

    try:
        return int.from_bytes(_socket.inet_aton(text), "big") if text.count(".") == 3 else None
    except OSError:
        return None


def _in_network(address: int, cidr: str) -> bool:
    network, _, bits_text = cidr.partition("/")
    base = _ipv4(network)
    if base is None or not bits_text.isdigit() or not 1 <= int(bits_text) <= 32:
        return False
    mask = (0xFFFFFFFF << (32 - int(bits_text))) & 0xFFFFFFFF
    return address & mask == base & mask
