"""Processes of this fleet that no live supervisord runs: what a supervisord that died
(kill -9, OOM) left behind. They are found by their command line, asked to leave once
idle (a job is never interrupted), and only then does a program of theirs start again."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping

from multiagent.fleet.host import triggers
from multiagent.fleet.host.procinfo import command_lines, is_running, parent_pid
from multiagent.fleet.model.fleetfile import Fleet, ProgramKind
from multiagent.fleet.model.layout import Layout
from multiagent.vocabulary import DrainMode


def fleet_processes(fleet: Fleet, layout: Layout) -> dict[str, list[int]]:
    """{program: pids} of every process running a program of this fleet: an agent's
    `-c <its agent conf>`, the embedded server's `--db <its database>`."""
    marks = {str(layout.agent_conf(name)): name for name in fleet.agents}
    if fleet.server.embedded:
        marks[str(layout.server_db)] = fleet.server_program
    found: dict[str, list[int]] = {}
    me = os.getpid()
    for pid, words in command_lines().items():
        for i, word in enumerate(words[1:], start=1):
            name = marks.get(word)
            if name and words[i - 1] in ("-c", "--config", "--db") and pid != me:
                found.setdefault(name, []).append(pid)
                break
    return found


def orphans(fleet: Fleet, layout: Layout, supervisord_pid: int | None) -> dict[str, list[int]]:
    """The fleet's processes that are not children of the live supervisord."""
    found = {}
    for name, pids in fleet_processes(fleet, layout).items():
        strays = [p for p in pids if parent_pid(p) != supervisord_pid]
        if strays:
            found[name] = strays
    return found


def ask_to_leave(layout: Layout, strays: dict[str, list[int]], kinds: Mapping[str, str]) -> None:
    """tf-agents get the hold flag (exit 0 once idle); the server, which runs no job, is
    told to stop; an upstream agent gets SIGUSR1 (it exits once idle: nobody respawns it).
    `kinds`: each stray's program kind."""
    for name, pids in strays.items():
        kind = kinds[name]
        if kind == ProgramKind.TF_AGENT:
            triggers.set_drain(layout, name, DrainMode.HOLD)
            continue
        for pid in pids:
            _signal(pid, signal.SIGTERM if kind == ProgramKind.SERVER else signal.SIGUSR1)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if is_running(pid)]


def from_first_running(pids: list[int]) -> list[int]:
    """`pids` from the first one still running on, [] once all have ended: waiting on
    this, each pid is found gone once, where `alive` reads /proc for all that are left
    at every look (thousands of reads while 500 agents exit, taking their CPU)."""
    for index, pid in enumerate(pids):
        if is_running(pid):
            return pids[index:]
    return []


def wait_gone(
    strays: dict[str, list[int]],
    timeout: float,
    say: Callable[[dict[str, list[int]]], None] | None = None,
    every: float = 10.0,
) -> dict[str, list[int]]:
    """Wait until the strays have exited; returns those still running at the deadline."""
    deadline = time.monotonic() + timeout
    next_say = 0.0
    while True:
        left = {name: living for name, pids in strays.items() if (living := alive(pids))}
        if not left or time.monotonic() > deadline:
            return left
        if say and time.monotonic() >= next_say:
            say(left)
            next_say = time.monotonic() + every
        time.sleep(0.1)


def kill(strays: dict[str, list[int]], grace: float = 10.0) -> dict[str, list[int]]:
    """Forced: SIGTERM each stray's process group, SIGKILL what is left after `grace`."""
    for pids in strays.values():
        for pid in pids:
            _killpg(pid, signal.SIGTERM)
    left = wait_gone(strays, grace)
    for pids in left.values():
        for pid in pids:
            _killpg(pid, signal.SIGKILL)
    return wait_gone(left, 5.0)


def _killpg(pid: int, signum: int) -> None:
    try:
        os.killpg(os.getpgid(pid), signum)
    except (ProcessLookupError, PermissionError):
        _signal(pid, signum)
