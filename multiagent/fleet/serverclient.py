"""tf-fleet's one client of the Testflinger server: every request tf-fleet makes to it
(status's look, an upstream agent's server-side state, submit, canary jobs) goes through
`ServerClient`, so the bearer token, its refresh and the timeouts live in one place.

On the agent's own HTTP client (`multiagent.agent.wire`): `tf-fleet status` asks the
server on every run, and urllib's http.client, like `requests`, costs start-up time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from multiagent import jsonio
from multiagent.fleet.errors import UserError

# Seconds a request may take. A look (`status`, an agent's record) must not hold up a
# command when the server is slow; a change or a job is worth waiting for; an upload
# of attachments may be large.
LOOK_TIMEOUT = 2.0
LIST_TIMEOUT = 3.0
CHANGE_TIMEOUT = 10.0
JOB_TIMEOUT = 30.0
TRANSFER_TIMEOUT = 600.0


class ServerError(UserError):
    """The server could not be reached, or refused a request; the text says which."""


class Refused(ServerError):
    """The server answered a request with an error status; `body` is what it said."""

    def __init__(self, what: str, status: int, body: str):
        super().__init__(f"{what}: HTTP {status}: {body.strip()}")
        self.status = status
        self.body = body


class Unreachable(ServerError):
    """No answer at all (refused, reset, timed out, no such host)."""

    def __init__(self, server: str, reason: object):
        super().__init__(f"cannot reach {server}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    cookies: dict[str, str] = field(default_factory=dict)  # what Set-Cookie headers set

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is none."""
        return jsonio.loads(self.body or b"null")


def base_url(server: str) -> str:
    server = server.rstrip("/")
    return server if "://" in server else "http://" + server


class ServerClient:
    """Requests to one server, as one client (a bearer token when given one)."""

    def __init__(self, server: str, token: str | None = None, timeout: float = JOB_TIMEOUT):
        self.server = base_url(server)
        self.timeout = timeout
        self.headers: dict[str, str] = {}
        if token:
            self.headers["Authorization"] = f"Bearer {self.access_token(token)}"

    @classmethod
    def with_token_file(
        cls, server: str, token_file: str | None, timeout: float = JOB_TIMEOUT
    ) -> ServerClient:
        """A client with the credential in `token_file` (none when it is None)."""
        if not token_file:
            return cls(server, None, timeout)
        # Here: `status` makes clients without a token file, and need not load the reader.
        from multiagent.tokenfile import read_token_file

        try:
            token = read_token_file(token_file)
        except OSError as exc:
            raise ServerError(f"cannot read the token file {token_file}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ServerError(str(exc)) from exc
        return cls(server, token, timeout)

    def access_token(self, token: str) -> str:
        """A refresh token (an agent's or a client's) is exchanged for an access token as
        upstream's agent does; a server's shared token is refused there and used as is."""
        try:
            resp = self.request("POST", "/v1/oauth2/refresh", {"refresh_token": token}, auth=False)
            if resp.status == 200:
                return str(resp.json().get("access_token") or token)
        except (ServerError, ValueError, AttributeError):
            pass
        return token

    def url(self, path: str) -> str:
        return self.server + path

    def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
        auth: bool = True,
        cookies: dict[str, str] | None = None,
    ) -> Response:
        """One request; any HTTP status is a Response, no answer is Unreachable."""
        headers = dict(self.headers) if auth else {}
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        if json_body is not None:
            body, content_type = jsonio.dumps(json_body).encode(), "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        try:
            return _exchange(method, self.url(path), body, headers, timeout or self.timeout)
        except OSError as exc:
            raise Unreachable(self.server, exc) from exc

    def get_json(self, path: str, timeout: float | None = None) -> Any:
        """The JSON a GET answers with; ServerError on an error status, ValueError on a
        body that is no JSON."""
        resp = self.request("GET", path, timeout=timeout)
        if resp.status >= 400:
            raise ServerError(f"{self.server}{path}: HTTP {resp.status}")
        return resp.json()

    # What tf-fleet asks ------------------------------------------------------------

    def agents(self) -> Any:
        return self.get_json("/v1/agents/data", LIST_TIMEOUT)

    def agent(self, name: str) -> Any:
        return self.get_json(f"/v1/agents/data/{name}", LOOK_TIMEOUT)

    def set_agent_state(self, name: str, state: str, comment: str) -> None:
        path = f"/v1/agents/data/{name}"
        resp = self.request(
            "POST", path, {"state": state, "comment": comment}, timeout=CHANGE_TIMEOUT
        )
        if resp.status >= 400:
            raise ServerError(f"HTTP {resp.status}: {resp.text.strip()[:200]}")

    def end_job(self, job_id: str, agent: str, state: str) -> None:
        """Post a job's final `state` as the agent that holds it (its name as upstream's
        agent sends it, in the `agent_name` cookie)."""
        self.headers["Cookie"] = f"agent_name={agent}"
        try:
            resp = self.request(
                "POST", f"/v1/result/{job_id}", {"job_state": state}, timeout=CHANGE_TIMEOUT
            )
        finally:
            del self.headers["Cookie"]
        if resp.status >= 400:
            raise ServerError(f"HTTP {resp.status}: {resp.text.strip()[:200]}")

    def submit(self, job: dict[str, Any], archive: bytes | None) -> str:
        resp = self.request("POST", "/v1/job", job)
        if resp.status != 200:
            raise Refused("submit failed", resp.status, resp.text)
        job_id = str(resp.json()["job_id"])
        if archive is not None:
            body, content_type = _multipart("file", "attachments.tar.gz", archive)
            # The submit's cookie is the job's upload credential (an anonymous submitter
            # has no other).
            resp = self.request(
                "POST",
                f"/v1/job/{job_id}/attachments",
                body=body,
                content_type=content_type,
                timeout=TRANSFER_TIMEOUT,
                cookies=resp.cookies,
            )
            if resp.status != 200:
                raise ServerError(
                    f"attachment upload failed: HTTP {resp.status}: {resp.text.strip()}"
                )
        return job_id

    def queue_agents(self, queue: str) -> list[dict[str, Any]]:
        """The agents the server knows on `queue` ([] when none, as its 404 says)."""
        import urllib.parse

        resp = self.request("GET", f"/v1/queues/{urllib.parse.quote(queue, safe='')}/agents")
        if resp.status == 404:
            return []
        if resp.status >= 400:
            raise Refused(f"agents of queue {queue}", resp.status, resp.text)
        data = resp.json()
        return [a for a in data if isinstance(a, dict)] if isinstance(data, list) else []

    def result(self, job_id: str) -> dict[str, Any] | None:
        resp = self.request("GET", f"/v1/result/{job_id}")
        if resp.status == 204:
            return None
        if resp.status >= 400:
            raise ServerError(f"result of {job_id}: HTTP {resp.status}")
        data = resp.json()
        return data if isinstance(data, dict) else None

    def output_since(self, job_id: str, start: int) -> tuple[str, int]:
        """New output text from fragment `start` on, and the next fragment number."""
        resp = self.request("GET", f"/v1/result/{job_id}/log/output?start_fragment={start}")
        if resp.status >= 400:
            raise ServerError(f"output of {job_id}: HTTP {resp.status}")
        phases = resp.json().get("output", {})
        text = "".join(entry["log_data"] for entry in phases.values())
        last = max((entry["last_fragment_number"] for entry in phases.values()), default=-1)
        return text, max(start, last + 1)


# Redirects are followed as urllib followed them: a GET or HEAD for each of these, a POST
# (as a GET without its body) for the first three; at most MAX_REDIRECTS in a row.
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10


def _exchange(
    method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float
) -> Response:
    """One request and its answer, redirects followed; OSError when there is no answer.
    On the agent's HTTP client and its reading of the proxy variables: tf-fleet reaches
    the server as its agents do, and `http.client` (urllib's) cost ~20 ms of every
    `status` (its email package and ssl)."""
    from urllib.parse import urljoin  # click has imported it already

    from multiagent.agent import proxy
    from multiagent.agent.wire import Connection, split_address

    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port = split_address(url)
        if scheme not in ("http", "https"):
            raise OSError(f"unsupported URL scheme {scheme!r}")
        target = _target(url)
        conn = Connection(scheme, host, port, timeout, proxy.for_server(scheme, host, port))
        try:
            reply = conn.request(method, target, body, {**headers, "Connection": "close"})
            data = reply.read()
        finally:
            conn.close()
        location = next((v for n, v in reply.headers if n == "location"), "")
        follows = method in ("GET", "HEAD") or (method == "POST" and reply.status in REDIRECTS[:3])
        if reply.status in REDIRECTS and location and follows:
            url = urljoin(url, location)
            if method == "POST":
                method, body = "GET", None
                headers = {k: v for k, v in headers.items() if k != "Content-Type"}
            continue
        set_cookies = [v for n, v in reply.headers if n == "set-cookie"]
        return Response(reply.status, data, _cookies(set_cookies) if set_cookies else {})
    return Response(reply.status, data)


def _target(url: str) -> str:
    """The request target of a URL: its path (at least "/") and query."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _cookies(headers: list[str]) -> dict[str, str]:
    from http.cookies import SimpleCookie

    jar: SimpleCookie = SimpleCookie()
    for header in headers:
        try:
            jar.load(header)
        except Exception:  # http.cookies.CookieError: a cookie we cannot read is not ours
            continue
    return {name: morsel.value for name, morsel in jar.items()}


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """One file as multipart/form-data (what upstream's CLI posts), and its content type."""
    boundary = os.urandom(16).hex()
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/gzip\r\n\r\n"
    )
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"
