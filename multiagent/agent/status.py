"""The local interface to tf-fleet: status file, drain flag and the one-process-per-name guard."""

from __future__ import annotations

import _socket  # the C module: `socket` builds enums at import (start-up cost)
import errno
import os
import time

from multiagent import jsonio
from multiagent.agent import __version__
from multiagent.agent.log import get as get_logger
from multiagent.vocabulary import (
    STATUS_REFRESH_SECONDS,
    AgentState,
    drain_file_name,
    read_drain_flag,
    status_file_name,
)

TYPE_CHECKING = False  # no typing import at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any

log = get_logger("tf-agent.status")

# Rewrite the status file this often at least (tf-fleet's limit is STATUS_REFRESH_SECONDS),
# and retry this often while writes fail; log a failure again at most this often.
REFRESH_EVERY = STATUS_REFRESH_SECONDS * 0.75
RETRY_EVERY = 2.0
FAILURE_LOG_EVERY = 60.0
SO_PEERCRED = getattr(_socket, "SO_PEERCRED", 17)


class StatusFile:
    """`<run-dir>/<agent>.json`, rewritten atomically so readers never see half a file.

    Every write stamps `written_at` (time.time()); `refresh_if_due` rewrites the file at
    least every REFRESH_EVERY s, idle or busy, so tf-fleet can tell a live writer from
    one that cannot write. A failed write (full disk, read-only or immutable file) never
    stops the agent: it is logged at once, then again every FAILURE_LOG_EVERY s while
    it lasts, and retried every RETRY_EVERY s until it works.

    The temp file is written in `tmp_dir` if given (the agent's own directory), so
    the shared run dir sees only the final rename: other agents' inotify watches on
    the run dir then ignore our status writes without waking up. Falls back to the
    run dir for good if the temp file cannot be made there or lies on another filesystem.
    """

    def __init__(self, run_dir: str, agent: str, tmp_dir: str | None = None):
        self.path = os.path.join(run_dir, status_file_name(agent))
        self.tmp_dir = (
            tmp_dir if tmp_dir and os.path.abspath(tmp_dir) != os.path.abspath(run_dir) else None
        )
        self.data: dict[str, Any] = {
            "agent": agent,
            "pid": os.getpid(),
            "state": AgentState.STARTING,
            "job_id": None,
            "phase": None,
            "since": time.time(),
            "last_poll": None,
            "restart_pending": False,
            "restart_reason": None,
            "drained": False,
            "server_reachable": False,
            "version": __version__,
            "written_at": None,
        }
        # TF_AGENT_STATUS_REFRESH: a shorter refresh period (seconds), e.g. for tests.
        self.refresh_every = min(
            REFRESH_EVERY, float(os.environ.get("TF_AGENT_STATUS_REFRESH") or REFRESH_EVERY)
        )
        self.last_attempt = 0.0  # monotonic
        self.failing_since: float | None = None  # wall clock of the first failed write
        self.failures = 0
        self.last_failure_log = 0.0  # monotonic

    def update(self, **changes: Any) -> None:
        """Apply changes and rewrite the file; `since` moves only when the state changes."""
        state = changes.get("state")
        if state is not None and state != self.data["state"]:
            changes.setdefault("since", time.time())
        self.data.update(changes)
        self.write()

    def next_refresh(self) -> float:
        """When (monotonic) the file must be rewritten: sooner while writes fail."""
        return self.last_attempt + (RETRY_EVERY if self.failing_since else self.refresh_every)

    def refresh_if_due(self) -> None:
        if time.monotonic() >= self.next_refresh():
            self.write()

    def write(self) -> bool:
        """Rewrite the file; False (logged, retried later) if it could not be written."""
        self.last_attempt = time.monotonic()
        self.data["written_at"] = time.time()
        error = None
        if self.tmp_dir is not None:
            tmp = os.path.join(self.tmp_dir, f".{os.path.basename(self.path)}.{os.getpid()}.tmp")
            error = self._write_via(tmp, own_dir=True)
            if error is None:
                return self._written()
        if self.tmp_dir is None:
            error = self._write_via(f"{self.path}.{os.getpid()}.tmp", own_dir=False)
            if error is None:
                return self._written()
        assert error is not None
        self._failed(error)
        return False

    def _write_via(self, tmp: str, own_dir: bool) -> OSError | None:
        step = "temp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                jsonio.dump(self.data, fh)
            step = "rename"
            os.replace(tmp, self.path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if own_dir and (step == "temp" or exc.errno == errno.EXDEV):
                # Our own dir cannot hold the temp file, or lies on another filesystem:
                # write beside the status file from now on.
                self.tmp_dir = None
            return exc
        return None

    def _written(self) -> bool:
        if self.failing_since is not None:
            log.warning(
                "status file %s written again (it could not be written for %.0f s, %d attempts)",
                self.path,
                time.time() - self.failing_since,
                self.failures,
            )
            self.failing_since, self.failures = None, 0
        return True

    def _failed(self, error: OSError) -> None:
        self.failures += 1
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = time.time()
        elif now - self.last_failure_log < FAILURE_LOG_EVERY:
            return
        self.last_failure_log = now
        since = time.strftime("%H:%M:%S", time.localtime(self.failing_since))
        log.error(
            "cannot write status file %s: %s (failing since %s, %d attempt(s); tf-fleet "
            "counts this agent as busy until it is written; retrying every %.0f s)",
            self.path,
            error.strerror or error,
            since,
            self.failures,
            RETRY_EVERY,
        )


class DrainFlag:
    """`<run-dir>/<agent>.drain`: take no new job; content `hold` means stay down."""

    def __init__(self, run_dir: str, agent: str):
        self.path = os.path.join(run_dir, drain_file_name(agent))

    def read(self) -> str | None:
        """None if absent, else HOLD or DRAIN (see vocabulary.read_drain_flag)."""
        return read_drain_flag(self.path)


class NameTaken(Exception):
    def __init__(self, agent: str, pid: int | None, uid: int | None):
        self.agent, self.pid, self.uid = agent, pid, uid
        super().__init__(f"agent {agent!r} is held by pid {pid or '?'}")


class NameGuard:
    """One process per agent name on this host: an abstract unix socket named after it.

    Binding the name is holding it; the kernel frees it when the process dies (kill -9
    included), and the socket is close-on-exec, so a phase's leftover process never
    keeps it. No file is involved: no flag (--run-dir) moves it and no file permission
    lets another user lock it. The name also carries the server (the same name on
    another server is another agent). A second process learns the holder's pid and uid
    from SO_PEERCRED on a connect, else from /proc (a full backlog).
    """

    def __init__(self, agent: str, server: str):
        self.agent = agent
        self.address = socket_name(agent, server)
        self.sock: _socket.socket | None = None

    def acquire(self) -> None:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            sock.bind(self.address)
            sock.listen(64)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            pid, uid = holder(self.address)
            raise NameTaken(self.agent, pid, uid) from None
        self.sock = sock

    def release(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def socket_name(agent: str, server: str) -> bytes:
    """The abstract socket address for `agent` on `server` (at most 107 bytes)."""
    from multiagent.agent.wire import split_address

    scheme, host, port = split_address(server)
    port = port or (443 if scheme == "https" else 80)
    name = f"tf-agent/{scheme}://{host}:{port}/{agent}".encode()
    if len(name) > 107:
        import zlib

        name = name[:98] + b"#" + f"{zlib.crc32(name):08x}".encode()
    return b"\0" + name


def holder(address: bytes) -> tuple[int | None, int | None]:
    """(pid, uid) of the process listening on the abstract `address`, when known."""
    import struct

    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    probe.setblocking(False)
    try:
        probe.connect(address)
        pid, uid, _gid = struct.unpack("3i", probe.getsockopt(_socket.SOL_SOCKET, SO_PEERCRED, 12))
        return pid, uid
    except OSError:
        return _holder_from_proc(address)
    finally:
        probe.close()


def _holder_from_proc(address: bytes) -> tuple[int | None, int | None]:
    """The listener's pid and uid from /proc/net/unix and /proc/*/fd (slow; rarely needed)."""
    wanted = "@" + address[1:].decode(errors="replace")
    inode = None
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == wanted and fields[5] == "01":
                    inode = fields[6]
                    break
    except OSError:
        return None, None
    if inode is None:
        return None, None
    target = f"socket:[{inode}]"
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") == target:
                    return int(entry), os.stat(f"/proc/{entry}").st_uid
        except OSError:
            continue
    return None, None
