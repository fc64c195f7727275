"""waitress' main loop on epoll, asking only the connections that may have changed.

At each pass waitress (3.0) builds a new poll set from every open connection, asking each
whether it wants to read and to write. Every agent holds a keep-alive connection, so with
500 agents a pass took ~2 ms of the server's CPU, and each request takes a few passes:
measured (bench/, a GET /v1/job at a time over N open connections), 0.8 ms of server CPU
per request with one connection and 1.6 ms with 500, of which the passes were most.

Here the connections stay registered with one epoll set. A connection that waits for its
next request (it wants to read, has nothing to write and no request in service) can only
change by an event on its own socket, or by waitress' sweep of connections idle too long,
which runs when the listening socket is asked: those are asked again, and every connection
at a sweep; the rest keep their registration. Connections serving a request, the
listening sockets and the wake-up pipe of waitress' worker threads are asked at every pass,
as waitress asks them. The handlers are waitress' own (`wasyncore.readwrite`).
"""

from __future__ import annotations

import select
from typing import Any

WAITING = select.POLLIN | select.POLLPRI  # a connection that waits for its next request


class WatchedMap(dict[int, Any]):
    """waitress' socket map (fd -> dispatcher), noting which fds were set or deleted: a
    closed connection's fd may be reused by the next accepted one."""

    def __init__(self) -> None:
        super().__init__()
        self.changed: set[int] = set()

    def __setitem__(self, fd: int, obj: Any) -> None:
        super().__setitem__(fd, obj)
        self.changed.add(fd)

    def __delitem__(self, fd: int) -> None:
        super().__delitem__(fd)
        self.changed.add(fd)


class EpollLoop:
    """Stands in for waitress' `wasyncore` module as a server's `asyncore`, whose `loop`
    its `run()` calls."""

    @staticmethod
    def loop(
        timeout: float = 30.0, use_poll: bool = False, map: Any = None, count: Any = None
    ) -> None:
        if not isinstance(map, WatchedMap):
            from waitress import wasyncore

            wasyncore.loop(timeout=timeout, use_poll=use_poll, map=map, count=count)
            return
        run(map, timeout)


def run(sockets: WatchedMap, timeout: float) -> None:
    """waitress' loop until the map is empty (its close) or a handler raises SystemExit."""
    from waitress.wasyncore import readwrite

    poller = Poller(sockets)
    try:
        while sockets:
            poller.update()
            for fd, flags in poller.epoll.poll(timeout):
                obj = sockets.get(fd)
                if obj is not None:
                    readwrite(obj, flags)
                    poller.happened(fd)
    finally:
        poller.epoll.close()


class Poller:
    def __init__(self, sockets: WatchedMap) -> None:
        self.sockets = sockets
        self.epoll = select.epoll()
        self.masks: dict[int, int] = {}  # fd -> the events it is registered for
        self.always: set[int] = set()  # listening sockets, the wake-up pipe
        self.ask: set[int] = set()  # connections to ask at the next pass
        self.busy: set[int] = set()  # connections not waiting for their next request
        self.woken = False  # a listening socket or the wake-up pipe had an event

    def happened(self, fd: int) -> None:
        if fd in self.always:
            self.woken = True  # a worker thread may have changed any busy connection
        else:
            self.ask.add(fd)

    def update(self) -> None:
        """Register each socket for what it wants now, asking those that may have changed."""
        self._take_changes()
        swept = False
        for fd in list(self.always):
            obj = self.sockets.get(fd)
            if obj is None:
                continue
            before = getattr(obj, "next_channel_cleanup", None)
            self._register(fd, obj)  # a listening socket's readable() runs the sweep
            swept = swept or getattr(obj, "next_channel_cleanup", None) != before
        if swept:
            ask = set(self.sockets)
        else:
            ask = self.ask | self.busy if self.woken else self.ask
        self.ask, self.woken = set(), False
        for fd in ask:
            obj = self.sockets.get(fd)
            if obj is None or fd in self.always:
                self.busy.discard(fd)
                continue
            if self._register(fd, obj) != WAITING or obj.requests:
                self.busy.add(fd)
            else:
                self.busy.discard(fd)

    def _take_changes(self) -> None:
        changed, self.sockets.changed = self.sockets.changed, set()
        for fd in changed:
            if self.masks.pop(fd, 0):
                try:
                    self.epoll.unregister(fd)
                except OSError:
                    pass  # closed already, which unregistered it
            self.always.discard(fd)
            self.busy.discard(fd)
            obj = self.sockets.get(fd)
            if obj is None:
                continue
            if hasattr(obj, "requests"):
                self.ask.add(fd)
            else:
                self.always.add(fd)

    def _register(self, fd: int, obj: Any) -> int:
        flags = 0
        if obj.readable():
            flags |= WAITING
        # accepting sockets should not be writable (as waitress says)
        if obj.writable() and not obj.accepting and not _write_waits(obj):
            flags |= select.POLLOUT
        old = self.masks.get(fd, 0)
        if flags == old:
            return flags
        try:
            if not flags:
                self.epoll.unregister(fd)
            elif old:
                self.epoll.modify(fd, flags)
            else:
                self.epoll.register(fd, flags)
        except OSError:
            # Its socket is closed: poll() would say POLLNVAL, and waitress closes it.
            from waitress.wasyncore import readwrite

            self.masks.pop(fd, None)
            readwrite(obj, select.POLLNVAL)
            return 0
        if flags:
            self.masks[fd] = flags
        else:
            self.masks.pop(fd, None)
        return flags


def _write_waits(obj: Any) -> bool:
    """Output that waits for the worker serving the connection's request: it sends as it
    writes, and wakes the loop when it ends, fails, or has more than the high watermark
    buffered (then it waits for the loop to send). waitress' own loop is woken by such a
    connection at every pass (its handle_write finds the worker holding the buffer, or
    too little to send); here it is asked again when the worker wakes the loop."""
    requests = getattr(obj, "requests", None)
    return (
        bool(requests)
        and not obj.will_close
        and obj.total_outbufs_len <= obj.adj.outbuf_high_watermark
    )
