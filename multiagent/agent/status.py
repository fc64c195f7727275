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
    read_drain,
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
        self.note(**changes)
        self.write()

    def note(self, **changes: Any) -> None:
        """Apply changes that the next write carries (one that follows at once)."""
        state = changes.get("state")
        if state is not None and state != self.data["state"]:
            changes.setdefault("since", time.time())
        self.data.update(changes)

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

    def look(self) -> tuple[str, str] | None:
        """None if absent, else (HOLD or DRAIN, the operator's reason or "")."""
        return read_drain(self.path)


class NameTaken(Exception):
    def __init__(self, agent: str, pid: int | None, uid: int | None):
        self.agent, self.pid, self.uid = agent, pid, uid
        super().__init__(f"agent {agent!r} is held by pid {pid or '?'}")


LOCK_DIR = (".local", "state", "tf-agent")  # under the user's home (from the passwd entry)


class NameGuard:
    """One process per agent name and server for this user on this host.

    The guard is an exclusive flock on a file in `~/.local/state/tf-agent/`, the home taken
    from the passwd entry (not $HOME: two agents of one user must agree on it), each
    directory on the way the user's (or root's) and writable by nobody else. So no other
    user can create, lock or plant a link to it: nothing another uid does stops the agent
    from starting or makes it exit. The kernel drops the lock when the process dies
    (kill -9 included); the file is close-on-exec, so a phase's leftover process never
    keeps it. No flag (--run-dir, the
    config's place) moves it. The holder writes its pid into the file for the refusal.

    A user without a home of its own (a fleet's `useradd --system --no-create-home`
    user) locks the same file in `own_dir`, the agent's own directory (its config's,
    which tf-fleet makes 0700 for the agent's user), when that directory is as private:
    no other user can touch it either, but two fleets' agents of one name no longer see
    each other. Only where neither exists does it fall back to an abstract unix socket,
    and there a name held by another user (not root) is ignored with a warning rather
    than obeyed: nothing another uid binds keeps the agent from starting.
    """

    def __init__(self, agent: str, server: str, own_dir: str | None = None):
        self.agent = agent
        self.address = socket_name(agent, server)
        self.lock_name = lock_file_name(self.address)
        self.own_dir = own_dir
        self.sock: _socket.socket | None = None
        self.fd: int | None = None
        self.dir_fd: int | None = None
        self.where = "home"  # home | own-dir | socket | unguarded (main.py warns of the last two)
        self.squatter: int | None = None  # the uid that held the socket name, if any

    def acquire(self) -> None:
        dir_fd = private_lock_dir()
        if dir_fd is None and self.own_dir is not None:
            dir_fd = private_dir(self.own_dir)
            self.where = "own-dir"
        if dir_fd is None:
            self._acquire_socket()
            return
        try:
            self.fd = _lock(dir_fd, self.lock_name, self.agent)
        except BaseException:
            os.close(dir_fd)
            raise
        self.dir_fd = dir_fd

    def _acquire_socket(self) -> None:
        self.where = "socket"
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            sock.bind(self.address)
            sock.listen(64)
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            pid, uid = holder(self.address)
            if uid is not None and uid not in (os.getuid(), 0):
                self.where, self.squatter = "unguarded", uid
                return
            raise NameTaken(self.agent, pid, uid) from None
        self.sock = sock

    def release(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.fd is not None and self.dir_fd is not None:
            # Removed while still locked: a later agent re-checks that the file it locked
            # is the one at the path (see _lock), so this cannot let two agents in.
            try:
                os.unlink(self.lock_name, dir_fd=self.dir_fd)
            except OSError:
                pass
            os.close(self.fd)
            os.close(self.dir_fd)
            self.fd = self.dir_fd = None


def private_lock_dir() -> int | None:
    """An open descriptor of `~/.local/state/tf-agent` (made 0700 where missing), or None
    when the user has no home of its own: every directory must belong to the user (or
    root) and be writable by no one else, and none below the home may be a symlink."""
    import pwd

    uid = os.getuid()
    try:
        home = pwd.getpwuid(uid).pw_dir
        fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (KeyError, OSError):
        return None
    try:
        if not _only_mine(fd, uid):
            os.close(fd)
            return None
        for part in LOCK_DIR:
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            sub = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = sub
            if not _only_mine(fd, uid):
                os.close(fd)
                return None
    except OSError:
        os.close(fd)
        return None
    return fd


def private_dir(path: str) -> int | None:
    """An open descriptor of `path` when it and its parent are the user's (or root's) and
    no one else may write in them (a sticky parent such as /tmp is fine), else None."""
    uid = os.getuid()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        parent = os.stat(os.path.dirname(os.path.abspath(path)))
    except OSError:
        os.close(fd)
        return None
    sticky = parent.st_mode & 0o1000
    if _only_mine(fd, uid) and parent.st_uid in (uid, 0) and (sticky or not parent.st_mode & 0o022):
        return fd
    os.close(fd)
    return None


def _only_mine(fd: int, uid: int) -> bool:
    st = os.fstat(fd)
    return st.st_uid in (uid, 0) and not st.st_mode & 0o022


def _lock(dir_fd: int, name: str, agent: str) -> int:
    """Lock `name` in `dir_fd` exclusively and write our pid in it; NameTaken when held."""
    import fcntl

    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno != errno.EWOULDBLOCK:
                os.close(fd)
                raise
            pid = _pid_in(fd)
            uid = os.fstat(fd).st_uid
            os.close(fd)
            raise NameTaken(agent, pid, uid) from None
        try:
            at_path = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            at_path = None
        mine = os.fstat(fd)
        if at_path is None or (at_path.st_ino, at_path.st_dev) != (mine.st_ino, mine.st_dev):
            os.close(fd)  # its holder removed it as we opened it: lock the new one
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd


def _pid_in(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def lock_file_name(address: bytes) -> str:
    """The lock file's name for an abstract socket address: its text with every byte a file
    name should not hold as %XX (at most 200 bytes)."""
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"
    text = "".join(chr(b) if b in safe else f"%{b:02X}" for b in address[1:])
    if len(text) > 200:
        import zlib

        text = text[:191] + "#" + f"{zlib.crc32(text.encode()):08x}"
    return text + ".lock"


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
