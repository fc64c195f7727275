"""The private supervisord spawns a pass's programs before any of them runs.

supervisord starts programs in a pass of its main loop: it forks each one in priority
order, and each child execs its command at once. At a cold `up` of hundreds of agents the
children compete for the cores with supervisord, which is one runnable process among
hundreds still forking the rest: its pass took 3.5-4.8 s for 200 agents where it took
~0.6 s with the children held back (bench/, two cores), and every agent is RUNNING only
startsecs after that pass ends. So here the first program of a pass (the lowest priority:
the embedded server, which the agents will ask for) runs at once, and the others wait on
a pipe, before their exec, until supervisord has forked them all; the same CPU is then
spent, but supervisord's pass is not starved by the programs it already started.

Installed by `launch` in the private supervisord only, on supervisor's own methods; if
they are not the ones this module knows, supervisord spawns as it always did. Nothing
outside the process tree is involved: the pipe's write end lives in supervisord, and
a held child reads EOF when supervisord closes it, or when supervisord dies.
"""

from __future__ import annotations

import os
from typing import Any


class Gate:
    """One pass's pipe: programs spawned after the pass's first wait for its EOF."""

    def __init__(self) -> None:
        self.spawned = 0  # programs forked in this pass
        self.read_fd = -1
        self.write_fd = -1
        self.holding = False  # the program being forked now waits (read in the child)

    def before_fork(self) -> None:
        """In supervisord, before a program is forked: the first of a pass runs at
        once, the rest wait for the pass to end."""
        self.spawned += 1
        self.holding = False
        if self.spawned == 1:
            return
        if self.write_fd < 0:
            try:
                self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
            except OSError:
                return  # no fds left: spawn as supervisor does
        self.holding = True

    def after_fork(self) -> None:
        """In supervisord, once the program is forked."""
        self.holding = False

    def keep_fd(self, fd: int) -> bool:
        """In a held child, as supervisor closes the fds it inherited: keep the read end
        (the write end goes with the rest, and is not closed again later)."""
        if not self.holding:
            return False
        if fd == self.write_fd:
            self.write_fd = -1
        return fd == self.read_fd

    def wait_in_child(self) -> None:
        """In a held child, just before its exec: wait for the pass to end."""
        if not self.holding:
            return
        _close(self.write_fd)  # if left open: else it would keep its own EOF from coming
        self.write_fd = -1
        try:
            os.read(self.read_fd, 1)  # EOF once supervisord closes the write end
        except OSError:
            pass
        _close(self.read_fd)

    def end_pass(self) -> None:
        """In supervisord, after a pass's spawns: let the held programs run."""
        _close(self.write_fd)
        _close(self.read_fd)
        self.read_fd = self.write_fd = -1
        self.spawned = 0
        self.holding = False


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def install(gate: Gate | None = None) -> bool:
    """Hold back the later programs of each spawning pass in this process's supervisor;
    False (and supervisor's own spawning) where its methods are not the ones known."""
    from supervisor import options, process, supervisord

    server: Any = getattr(options, "ServerOptions", None)
    subprocess_: Any = getattr(process, "Subprocess", None)
    daemon: Any = getattr(supervisord, "Supervisor", None)
    hooks = ((server, "close_fd"), (server, "execve"), (subprocess_, "spawn"), (daemon, "reap"))
    if not all(callable(getattr(owner, name, None)) for owner, name in hooks):
        return False
    gate = gate or Gate()
    close_fd, execve = server.close_fd, server.execve
    spawn, reap = subprocess_.spawn, daemon.reap

    def gated_spawn(self: Any) -> Any:
        gate.before_fork()
        try:
            return spawn(self)
        finally:
            gate.after_fork()  # the child never returns here: it execs or exits

    def gated_close_fd(self: Any, fd: int) -> Any:
        if gate.keep_fd(fd):
            return None
        return close_fd(self, fd)

    def gated_execve(self: Any, filename: str, argv: list[str], env: dict[str, str]) -> Any:
        gate.wait_in_child()
        return execve(self, filename, argv, env)

    def gated_reap(self: Any, *args: Any, **kwargs: Any) -> Any:
        gate.end_pass()  # supervisord's loop reaps right after its pass over the groups
        return reap(self, *args, **kwargs)

    subprocess_.spawn = gated_spawn
    server.close_fd = gated_close_fd
    server.execve = gated_execve
    daemon.reap = gated_reap
    return True
