"""How the agent is told to restart or stop: signals, the restart file, a self-pipe to wake up.

Signal handlers only set flags and write one byte to a pipe. Every wait in the
agent (idle polling, back-off, a running phase) selects on that pipe, so a
signal ends the wait at once instead of after the polling interval.

While idle, the agent also selects on an inotify fd (`DirWatch`) watching the
restart dir and the run dir, so a restart file or a drain flag is seen at once
without waking up to look. Events are filtered by name; files are still checked
directly (the events only say "look now") and every `RECHECK` seconds anyway.
Without inotify (no libc or _ctypes, watch limit, Linux's 128 instances per user taken
by as many agents, TF_AGENT_NO_INOTIFY=1) the kernel signals a change in either
directory instead (`DirNotify`, dnotify: no such limit, but no names, so a busy
directory is looked at once per `QUIET`); without that either (restart dir missing,
TF_AGENT_NO_DNOTIFY=1) the agent looks every `POLL_TICK` seconds.
"""

from __future__ import annotations

import fcntl
import os
import select
import stat
import sys
import time

from multiagent.agent.log import get as get_logger
from multiagent.vocabulary import restart_file_name

TYPE_CHECKING = False  # typing costs ~4 ms of start-up; only annotations need it
if TYPE_CHECKING:
    import signal
    from typing import Any
else:  # the C module: `signal` builds enums at import, CPU that every agent start pays
    import _signal as signal

log = get_logger("tf-agent.triggers")
SIGNAL_NAMES: dict[int, str] = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}

POLL_TICK = 0.5  # idle look at the restart file and drain flag without inotify
RECHECK = 5.0  # with inotify: direct look anyway, in case an event was missed
# After a wake-up for unrelated names (a busy /tmp, other agents in the run dir),
# leave events queued this long and read them in one go: a busy directory then
# costs at most one wake-up per QUIET, and a relevant event waits at most QUIET.
QUIET = 0.5

# <sys/inotify.h>
IN_ATTRIB, IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x4, 0x8, 0x40, 0x80
IN_CREATE, IN_DELETE = 0x100, 0x200
IN_Q_OVERFLOW, IN_IGNORED = 0x4000, 0x8000
IN_ONLYDIR, IN_MASK_ADD = 0x01000000, 0x20000000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
RESTART_MASK = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ATTRIB
# No IN_MOVED_TO in the (shared) run dir: every agent's status file arrives by a
# rename there, which would wake every agent for every other agent's poll. A drain
# flag written in place or removed is seen by its own name; tf-fleet's atomic write
# by its temp file's IN_MOVED_FROM (`.<agent>.drain.*`); one renamed in from another
# directory by the RECHECK look (and, as always, the look before each job poll).
DRAIN_MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_ATTRIB


class DirWatch:
    """Linux inotify (through libc.py): one non-blocking fd, a few directories, events by name."""

    def __init__(self) -> None:
        from multiagent.agent import libc

        init = libc.function("inotify_init1", libc.INT, libc.INT)
        self._add_watch = libc.function(
            "inotify_add_watch", libc.INT, libc.INT, libc.CHAR_P, libc.UINT32
        )
        self._errno = libc.errno
        self.fd = init(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            self._fail("inotify_init1")
        self._names: dict[int, tuple[set[bytes], tuple[bytes, ...]]] = {}
        self._needles: tuple[bytes, ...] = ()
        self.lost = False  # a watched directory went away (IN_IGNORED)

    def _fail(self, what: str) -> None:
        err = self._errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")

    def add(
        self, directory: str, mask: int, names: list[str], prefixes: tuple[str, ...] = ()
    ) -> None:
        """Watch `directory`; events for `names` (or names starting with `prefixes`) count."""
        wd = self._add_watch(self.fd, os.fsencode(directory), mask | IN_ONLYDIR | IN_MASK_ADD)
        if wd < 0:
            self._fail(f"inotify_add_watch {directory}")
        exact, starts = self._names.get(wd, (set(), ()))
        exact |= {os.fsencode(n) for n in names}
        self._names[wd] = (exact, starts + tuple(os.fsencode(p) for p in prefixes))
        # Byte strings that any event worth a closer look contains: a watched name
        # (with its NUL) or prefix, IN_Q_OVERFLOW (wd -1), IN_IGNORED on one of ours.
        order = sys.byteorder
        needles = {(-1).to_bytes(4, order, signed=True) + IN_Q_OVERFLOW.to_bytes(4, order)}
        for w, (ex, st) in self._names.items():
            needles.add(w.to_bytes(4, order, signed=True) + IN_IGNORED.to_bytes(4, order))
            needles.update(n + b"\0" for n in ex)
            needles.update(st)
        self._needles = tuple(needles)

    def read(self) -> tuple[bool, int]:
        """Read every queued event: (one may concern a watched name, events were read)."""
        relevant, count, names, order = False, 0, self._names, sys.byteorder
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return relevant, count
            if not buf:
                return relevant, count
            if not any(needle in buf for needle in self._needles):
                count += 1  # nothing for us (the usual case): no per-event work at all
                continue
            off, end = 0, len(buf)
            while off < end:
                # struct inotify_event: int wd; uint32 mask, cookie, len; char name[len]
                wd = int.from_bytes(buf[off : off + 4], order, signed=True)
                mask = int.from_bytes(buf[off + 4 : off + 8], order)
                length = int.from_bytes(buf[off + 12 : off + 16], order)
                count += 1
                if mask & IN_Q_OVERFLOW:
                    relevant = True
                elif mask & IN_IGNORED:
                    self.lost = relevant = True
                elif not relevant and length:
                    entry = names.get(wd)
                    if entry is not None:
                        name = buf[off + 16 : off + 16 + length].rstrip(b"\0")
                        relevant = name in entry[0] or name.startswith(entry[1])
                off += 16 + length

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# dnotify's events (<fcntl.h>): an entry created or renamed in (a restart file, an
# atomic drain flag), attributes (a touch); in the agent's own run dir also an entry
# removed or written in place (a drain flag). Not MODIFY in the restart dir (/tmp):
# every write to any file there would be a wake-up.
RESTART_NOTIFY = fcntl.DN_CREATE | fcntl.DN_ATTRIB
DRAIN_NOTIFY = fcntl.DN_CREATE | fcntl.DN_DELETE | fcntl.DN_MODIFY | fcntl.DN_ATTRIB


class DirNotify:
    """Linux dnotify (`fcntl(F_NOTIFY)`): SIGIO when a watched directory changes.

    inotify's instances are limited per user (128 by default), so on a host with more
    agents than that under one user the rest get these instead, which have no such
    limit. The signal names no file: the owner of the watch looks at its files.
    """

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}  # the directories' real paths -> their fds
        self.events: dict[str, int] = {}  # -> what is watched there

    def add(self, directory: str, events: int) -> None:
        """Watch `directory` for `events` (the caller handles SIGIO first: by default
        it ends the process)."""
        path = os.path.realpath(directory)
        fd = self.fds.get(path)
        if fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.fds[path] = fd
        # A second F_NOTIFY on an fd replaces the first: one directory, both sets of events.
        self.events[path] = self.events.get(path, 0) | events
        fcntl.fcntl(fd, fcntl.F_NOTIFY, self.events[path] | fcntl.DN_MULTISHOT)

    def lost(self) -> bool:
        """A watched directory was removed (a new one by its name is not watched)."""
        return any(os.fstat(fd).st_nlink == 0 for fd in self.fds.values())

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)  # the watch goes with the fd
        self.fds, self.events = {}, {}


class Waker:
    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        try:
            os.write(self.wfd, b"x")
        except BlockingIOError:
            pass  # already full: a wake-up is pending anyway

    def drain(self) -> None:
        try:
            while os.read(self.rfd, 512):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` s; True if woken."""
        ready, _, _ = select.select([self.rfd], [], [], max(0.0, timeout))
        if ready:
            self.drain()
            return True
        return False


class Triggers:
    """Restart / stop requests from every source, as plain flags the loop reads."""

    def __init__(self, agent: str, restart_dir: str):
        self.waker = Waker()
        self.restart_dir = restart_dir
        self.restart_reason: str | None = None
        self.stop_reason: str | None = None
        names = {agent, agent.replace("-", "")}
        self.restart_files = [
            os.path.join(restart_dir, restart_file_name(name)) for name in sorted(names)
        ]
        self._warned: dict[str, tuple[int, ...]] = {}
        self._uid = os.getuid()
        self.watch: DirWatch | None = None
        self.notify: DirNotify | None = None
        self._changed = False  # SIGIO came: a directory of `notify` changed
        self._idle_waiting = False  # an idle wait runs: SIGIO wakes it (a job's loop, not)
        self.watching: str | None = None  # set by start_watch: how idle waits wake up
        self.recheck_every = POLL_TICK
        self._quiet_until = 0.0

    # -- idle wake-ups ----------------------------------------------------------------
    def start_watch(self, drain_path: str) -> None:
        """Wake idle waits by inotify on the restart file and drain flag, else by dnotify on
        their directories, else poll; log which."""
        if self.watching is not None:
            return
        run_dir, drain_name = os.path.split(os.path.abspath(drain_path))
        reason = self._start_inotify(run_dir, drain_name)
        why_not = None if reason is None else self._start_dnotify(run_dir)
        if why_not is not None:
            self.recheck_every, self.watching = POLL_TICK, "poll"
            log.info("idle wake-ups: looking every %.1f s (%s; %s)", POLL_TICK, reason, why_not)
            return
        self.recheck_every = RECHECK
        self.watching = "inotify" if reason is None else "dnotify"
        log.info(
            "idle wake-ups: %s on %s and %s (%sdirect look every %.0f s)",
            self.watching,
            self.restart_dir,
            run_dir,
            f"{reason}; " if reason else "",
            RECHECK,
        )

    def _start_inotify(self, run_dir: str, drain_name: str) -> str | None:
        """Watch by inotify; None, or why not."""
        if os.environ.get("TF_AGENT_NO_INOTIFY"):
            return "TF_AGENT_NO_INOTIFY is set"
        watch = None
        try:
            watch = DirWatch()
            watch.add(
                self.restart_dir, RESTART_MASK, [os.path.basename(p) for p in self.restart_files]
            )
            watch.add(run_dir, DRAIN_MASK, [drain_name], prefixes=(f".{drain_name}.",))
        except OSError as exc:  # libc.function's too: no _ctypes, no inotify in libc
            if watch is not None:
                watch.close()
            return f"inotify unavailable: {exc}"
        self.watch = watch
        return None

    def _start_dnotify(self, run_dir: str) -> str | None:
        """Watch by dnotify; None, or why not."""
        if os.environ.get("TF_AGENT_NO_DNOTIFY"):
            return "TF_AGENT_NO_DNOTIFY is set"
        notify = DirNotify()
        signal.signal(signal.SIGIO, self._on_io)  # before the first watch: SIGIO kills
        try:
            notify.add(self.restart_dir, RESTART_NOTIFY)
            notify.add(run_dir, DRAIN_NOTIFY)
        except OSError as exc:
            notify.close()
            return f"dnotify unavailable: {exc}"
        self.notify = notify
        return None

    def wait(self, timeout: float) -> bool:
        """Idle sleep up to `timeout` s; True if woken by a signal or an event to look at."""
        watch = self.watch
        if watch is None:
            if self.notify is not None:
                return self._wait_notified(timeout)
            return self.waker.wait(timeout)
        now = time.monotonic()
        if now < self._quiet_until:
            if self.waker.wait(min(timeout, self._quiet_until - now)):
                return True
            if time.monotonic() < self._quiet_until:
                return False  # the caller's timeout came first
            return self._read_events()
        ready, _, _ = select.select([self.waker.rfd, watch.fd], [], [], max(0.0, timeout))
        if self.waker.rfd in ready:
            self.waker.drain()
            return True
        return self._read_events() if ready else False

    def _wait_notified(self, timeout: float) -> bool:
        """wait() under dnotify: a change is a look, at most one per QUIET (a busy /tmp)."""
        notify = self.notify
        assert notify is not None
        if notify.lost():
            log.warning(
                "dnotify watch lost (directory gone?): looking every %.1f s from now", POLL_TICK
            )
            notify.close()
            self.notify, self.watching, self.recheck_every = None, "poll", POLL_TICK
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        self._idle_waiting = True
        try:
            while True:
                now = time.monotonic()
                if self._changed and now >= self._quiet_until:
                    break
                if now >= deadline:
                    return False
                # A change in a quiet time is looked at when it ends (the wait is cut short).
                until = min(deadline, self._quiet_until) if self._changed else deadline
                woken = self.waker.wait(until - now)
                if woken and (not self._changed or self.restart_pending or self.stop_reason):
                    break  # SIGUSR1, SIGTERM, SIGCHLD: the caller looks at once
        finally:
            self._idle_waiting = False
        # The change's own wake-up byte too: the caller looks at every flag and file now.
        self.waker.drain()
        self._changed = False
        self._quiet_until = time.monotonic() + QUIET
        return True

    def flush_events(self) -> None:
        """While busy (no idle wait reads them): drop queued events, keep the kernel queue short."""
        if self.watch is not None:
            self._read_events()

    def _read_events(self) -> bool:
        watch = self.watch
        assert watch is not None
        try:
            relevant, count = watch.read()
        except OSError as exc:
            watch.lost, relevant, count = True, True, 1
            log.debug("reading inotify events: %s", exc)
        if watch.lost:
            log.warning(
                "inotify watch lost (directory gone?): looking every %.1f s from now", POLL_TICK
            )
            watch.close()
            self.watch, self.watching, self.recheck_every = None, "poll", POLL_TICK
            return True
        if count and not relevant:
            self._quiet_until = time.monotonic() + QUIET
        return relevant

    @property
    def restart_pending(self) -> bool:
        return self.restart_reason is not None

    def install(self) -> None:
        signal.signal(signal.SIGUSR1, self._on_usr1)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        # SIGCHLD wakes a running phase's select, so a shell that exits while a
        # background grandchild still holds the output pipe open is seen at once.
        signal.signal(signal.SIGCHLD, self._on_chld)

    def _on_usr1(self, _signum: int, _frame: Any) -> None:
        if self.restart_reason is None:
            self.restart_reason = "SIGUSR1"
        self.waker.wake()

    def _on_term(self, signum: int, _frame: Any) -> None:
        if self.stop_reason is None:
            self.stop_reason = SIGNAL_NAMES.get(signum, f"signal {signum}")
        self.waker.wake()

    def _on_chld(self, _signum: int, _frame: Any) -> None:
        self.waker.wake()

    def _on_io(self, _signum: int, _frame: Any) -> None:
        self._changed = True  # a watched directory changed (dnotify): wait() decides when
        if self._idle_waiting:
            # Not while a job runs: its loop looks at the restart file every few seconds
            # anyway, and a busy /tmp would wake it for every file made there.
            self.waker.wake()

    def request_restart(self, reason: str) -> None:
        if self.restart_reason is None:
            self.restart_reason = reason

    def find_restart_file(self) -> str | None:
        """A restart file we may honour: a regular file (not a symlink) owned by us or root.

        Anything else is ignored with one warning per file, since /tmp is
        world-writable and another user must not be able to restart us.
        """
        for path in self.restart_files:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                self._warned.pop(path, None)
                continue
            except OSError:
                continue
            problem = None
            if not stat.S_ISREG(st.st_mode):
                problem = "not a regular file (symlink?)"
            elif st.st_uid not in (self._uid, 0):
                problem = f"owned by uid {st.st_uid}, not {self._uid} or root"
            if problem is None:
                return path
            ident = (st.st_dev, st.st_ino, st.st_mode, st.st_uid)
            if self._warned.get(path) != ident:
                self._warned[path] = ident
                log.warning("ignoring restart file %s: %s", path, problem)
        return None

    def check_restart_file(self) -> bool:
        """Mark a restart pending if a valid restart file exists (the file stays until exit)."""
        if self.find_restart_file() is not None:
            self.request_restart("restart file")
            return True
        return False

    def consume_restart_file(self) -> None:
        for path in self.restart_files:
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_uid in (self._uid, 0):
                try:
                    os.unlink(path)
                except OSError as exc:
                    log.warning("cannot remove restart file %s: %s", path, exc)
