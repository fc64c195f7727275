"""REST client for the Testflinger API v1 (one persistent connection, `wire`).

`requests`/`urllib3` would double the idle agent's memory, so cookies, bearer
refresh and multipart are done by hand. There are no automatic retries with
backoff here: the caller decides when to try again, so a dead server never
blocks a restart signal for long.
"""

from __future__ import annotations

import os

from multiagent import jsonio
from multiagent.agent import proxy
from multiagent.agent.log import get as get_logger
from multiagent.agent.wire import Connection, query, quote, split_address

TYPE_CHECKING = False  # no typing import at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any

log = get_logger("tf-agent.client")

DEFAULT_TIMEOUT = 10.0
TRANSFER_TIMEOUT = 600.0


class ServerUnreachable(Exception):
    """Connection refused, reset, timed out or the server answered 5xx."""


class Response:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: bytes, headers: dict[str, str]):
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return jsonio.loads(self.body)
        except ValueError:
            return None


class Client:
    def __init__(
        self,
        server_address: str,
        agent_name: str,
        token_file: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        # Upstream builds absolute /v1/... URLs, so any path prefix is dropped too.
        self.scheme, host, self.port = split_address(server_address)
        self.host = host or "localhost"
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.server = f"{self.scheme}://{shown}" + (f":{self.port}" if self.port else "")
        self.agent_name = agent_name
        self.token_file = token_file
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self._access_token: str | None = None
        self._conn: Connection | None = None
        # Read once, as the environment the agent was started with sets it.
        self.proxy = proxy.for_server(self.scheme, self.host, self.port)

    # -- connection -------------------------------------------------------------
    def _connect(self, timeout: float) -> Connection:
        if self._conn is None:
            self._conn = Connection(self.scheme, self.host, self.port, timeout, self.proxy)
        else:
            self._conn.set_timeout(timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def _send_once(
        self,
        method: str,
        path: str,
        body: Any,
        headers: dict[str, str],
        timeout: float,
        sink: Any = None,
    ) -> Response:
        conn = self._connect(timeout)
        reused = conn.sock is not None
        try:
            if hasattr(body, "read"):
                body.seek(0)
            resp = conn.request(method, path, body, headers)
            if sink is not None and resp.status == 200:
                while True:
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    sink.write(chunk)
                data = b""
            else:
                data = resp.read()
            hdrs = dict(resp.headers)
            for key, value in resp.headers:
                if key == "set-cookie":
                    self._store_cookie(value)
            if resp.will_close:
                self.close()
            return Response(resp.status, data, hdrs)
        except OSError as exc:
            self.close()
            # wire.RemoteDisconnected (closed before any answer) is a ConnectionResetError.
            if reused and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                # The server dropped an idle keep-alive connection: the request
                # was not processed, so one immediate retry on a fresh one is safe.
                raise _StaleConnection() from exc
            raise ServerUnreachable(f"{method} {path}: {exc!r}") from exc

    def _store_cookie(self, header: str) -> None:
        first = header.split(";", 1)[0]
        if "=" in first:
            name, value = first.split("=", 1)
            self.cookies[name.strip()] = value.strip()

    def _headers(self, extra: dict[str, str] | None, auth: bool) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "tf-agent"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if auth and self._access_token:
            headers["Authorization"] = f"Bearer {self._access_token}"
        if extra:
            headers.update(extra)
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        sink: Any = None,
    ) -> Response:
        """One request; raises ServerUnreachable on transport errors and 5xx."""
        if json_body is not None:
            body = jsonio.dumps(json_body).encode()
            headers = {**(headers or {}), "Content-Type": "application/json"}
        timeout = self.timeout if timeout is None else timeout
        if self.token_file and self._access_token is None:
            self._refresh_token()
        resp = self._send(method, path, body, self._headers(headers, True), timeout, sink)
        if resp.status == 401 and self.token_file:
            # Upstream's hook: drop the token, fetch a new one, replay exactly once.
            self._access_token = None
            self._refresh_token()
            resp = self._send(method, path, body, self._headers(headers, True), timeout, sink)
        if resp.status >= 500:
            raise ServerUnreachable(f"{method} {path}: HTTP {resp.status}")
        return resp

    def _send(self, method, path, body, headers, timeout, sink) -> Response:
        try:
            return self._send_once(method, path, body, headers, timeout, sink)
        except _StaleConnection:
            try:
                return self._send_once(method, path, body, headers, timeout, sink)
            except _StaleConnection as exc:
                raise ServerUnreachable(f"{method} {path}: connection dropped") from exc

    def _refresh_token(self) -> None:
        # Imported here: only an agent given --token-file reads one.
        from multiagent.tokenfile import read_token_file

        try:
            refresh = read_token_file(self.token_file or "")
        except (OSError, ValueError) as exc:
            log.error("cannot read refresh token from %s: %s", self.token_file, exc)
            return
        body = jsonio.dumps({"refresh_token": refresh}).encode()
        headers = self._headers({"Content-Type": "application/json"}, auth=False)
        resp = self._send("POST", "/v1/oauth2/refresh", body, headers, 15.0, None)
        if resp.status == 200:
            token = (resp.json() or {}).get("access_token")
            if token:
                self._access_token = token
                return
        log.error("token refresh failed: HTTP %s %s", resp.status, resp.body[:200])

    # -- endpoints --------------------------------------------------------------
    def _agent_path(self, prefix: str) -> str:
        return f"{prefix}/{quote(self.agent_name)}"

    def post_agent_data(self, data: dict[str, Any], timeout: float | None = None) -> bool:
        resp = self.request(
            "POST", self._agent_path("/v1/agents/data"), json_body=data, timeout=timeout
        )
        if not resp.ok:
            log.warning("agent data post %s: HTTP %s %s", data, resp.status, resp.body[:200])
        return resp.ok

    def answer_for_job(self, job_id: str, timeout: float | None = None) -> int:
        """Tell the server this agent has its job (the first post naming it, as upstream's
        agent makes); the HTTP status: 409 when the server took the job back meanwhile."""
        path = self._agent_path("/v1/agents/data")
        return self.request("POST", path, json_body={"job_id": job_id}, timeout=timeout).status

    def get_agent_data(self) -> dict[str, Any]:
        resp = self.request("GET", self._agent_path("/v1/agents/data"))
        data = resp.json() if resp.status == 200 else None
        return data if isinstance(data, dict) else {}

    def post_queues(self, queues: dict[str, str]) -> None:
        self.request("POST", "/v1/agents/queues", json_body=queues)

    def post_images(self, images: dict[str, dict[str, str]]) -> None:
        self.request("POST", "/v1/agents/images", json_body=images)

    def poll_job(self, queues: list[str]) -> tuple[int, dict[str, Any] | None]:
        """(status, job or None). 204 means no job."""
        params = query([("queue", q) for q in queues])
        resp = self.request("GET", f"/v1/job?{params}")
        if resp.status == 200:
            job = resp.json()
            return resp.status, job if isinstance(job, dict) and job else None
        if resp.status in (401, 403):
            log.warning("not authorized to poll for jobs: HTTP %s", resp.status)
        return resp.status, None

    def get_result(self, job_id: str) -> dict[str, Any]:
        resp = self.request("GET", f"/v1/result/{job_id}")
        data = resp.json() if resp.status == 200 else None
        return data if isinstance(data, dict) else {}

    def post_result(self, job_id: str, data: dict[str, Any], timeout: float | None = None) -> bool:
        resp = self.request("POST", f"/v1/result/{job_id}", json_body=data, timeout=timeout)
        if not resp.ok:
            log.warning("result post for %s: HTTP %s %s", job_id, resp.status, resp.body[:200])
        return resp.ok

    def get_log(self, job_id: str, log_type: str) -> dict[str, dict[str, Any]]:
        """What the server holds of a job's log: `{phase: {last_fragment_number, log_data}}`."""
        resp = self.request("GET", f"/v1/result/{job_id}/log/{log_type}")
        data = resp.json() if resp.status == 200 else None
        logs = data.get(log_type) if isinstance(data, dict) else None
        return logs if isinstance(logs, dict) else {}

    def post_log(self, job_id: str, log_type: str, fragment: dict[str, Any]) -> bool:
        resp = self.request("POST", f"/v1/result/{job_id}/log/{log_type}", json_body=fragment)
        if not resp.ok:
            log.warning("log post for %s: HTTP %s %s", job_id, resp.status, resp.body[:200])
        return resp.ok

    def post_provision_log(self, job_id: str, exit_code: int, detail: str) -> None:
        body = {"job_id": job_id, "exit_code": exit_code, "detail": detail}
        self.request("POST", self._agent_path("/v1/agents/provision_logs"), json_body=body)

    def download_attachments(self, job_id: str, path: str) -> int:
        with open(path, "wb") as fh:
            resp = self.request(
                "GET", f"/v1/job/{job_id}/attachments", timeout=TRANSFER_TIMEOUT, sink=fh
            )
        return resp.status

    def upload_artifact(self, job_id: str, tarball: str) -> Response:
        import uuid  # per artifact only: ~4 ms of import

        boundary = uuid.uuid4().hex
        head = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="file"\r\n'
            "Content-Type: application/x-gzip\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        body = _MultipartBody(head, tarball, tail)
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(body)),
        }
        return self.request(
            "POST",
            f"/v1/result/{job_id}/artifact",
            body=body,
            headers=headers,
            timeout=TRANSFER_TIMEOUT,
        )


class _StaleConnection(Exception):
    pass


class _MultipartBody:
    """File-like multipart body streamed from disk (artifacts can be large)."""

    def __init__(self, head: bytes, path: str, tail: bytes):
        self.head, self.path, self.tail = head, path, tail
        self.size = os.path.getsize(path)
        self._fh: Any = None
        self._stage = 0

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def seek(self, _pos: int) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = None
        self._stage = 0

    def read(self, size: int = -1) -> bytes:
        if self._stage == 0:
            self._stage = 1
            self._fh = open(self.path, "rb")
            return self.head
        if self._stage == 1:
            chunk = self._fh.read(size if size > 0 else 1 << 16)
            if chunk:
                return chunk
            self._fh.close()
            self._fh = None
            self._stage = 2
            return self.tail
        return b""
