"""The private supervisord runs a pass's later programs once it has forked them all."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fixtures_server import wait_for
from supervisor import options as supervisor_options
from supervisor import process as supervisor_process
from supervisor import supervisord as supervisor_daemon

from multiagent.fleet.supervisord import spawngate
from multiagent.fleet.supervisord.client import Supervisor, SupervisorError, SupervisorTarget

LATER = 24  # programs after the first of the pass


def _fork_held(gate: spawngate.Gate, inherited: range | None) -> int:
    """A child as supervisor makes one: it closes the fds it inherited (those of
    `inherited`, all of them if None) through the gate, then waits as it would before
    its exec, then exits 0."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        try:
            for fd in inherited if inherited is not None else range(3, 1024):
                if not gate.keep_fd(fd):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            gate.wait_in_child()
        finally:
            os._exit(0)
    gate.after_fork()
    return pid


def _running(pid: int) -> bool:
    return os.waitpid(pid, os.WNOHANG) == (0, 0)


@pytest.mark.parametrize("closes_write_end", [True, False], ids=["fds-closed", "fds-kept"])
def test_a_held_child_waits_for_the_end_of_the_pass(closes_write_end: bool):
    gate = spawngate.Gate()
    gate.before_fork()
    assert not gate.holding  # the pass's first program runs at once
    gate.after_fork()
    gate.before_fork()
    assert gate.holding and gate.read_fd >= 0 and gate.write_fd >= 0
    # Whether supervisor's close loop reaches the write end (below minfds) or not
    # (above it), the child's own copy must go, or its EOF would never come.
    inherited = None if closes_write_end else range(3, 3)
    children = [_fork_held(gate, inherited)]
    gate.before_fork()
    children.append(_fork_held(gate, inherited))
    assert all(_running(pid) for pid in children)
    gate.end_pass()
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0
    assert (gate.read_fd, gate.write_fd, gate.spawned) == (-1, -1, 0)
    gate.before_fork()
    assert not gate.holding and gate.read_fd == -1  # a new pass: its first runs at once


def test_install_leaves_a_supervisor_it_does_not_know(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(supervisor_process, "Subprocess", object)
    assert spawngate.install() is False


def test_install_wraps_supervisors_own_methods(monkeypatch: pytest.MonkeyPatch):
    hooks = [
        (supervisor_options.ServerOptions, "close_fd"),
        (supervisor_options.ServerOptions, "execve"),
        (supervisor_process.Subprocess, "spawn"),
        (supervisor_daemon.Supervisor, "reap"),
    ]
    for owner, name in hooks:
        monkeypatch.setattr(owner, name, getattr(owner, name))  # put back after the test
    before = [getattr(owner, name) for owner, name in hooks]
    assert spawngate.install() is True
    assert all(
        getattr(owner, name) is not old for (owner, name), old in zip(hooks, before, strict=True)
    )


def _answering(supervisor: Supervisor) -> int | None:
    """supervisord's pid once it answers (it does after its first pass)."""
    try:
        return supervisor.pid()
    except SupervisorError:
        return None


def _log_time(line: str) -> float:
    stamp = line[: len("2026-01-01 00:00:00,000")]
    when = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
    return when.timestamp()  # supervisord logs local time, as strptime reads it


def test_supervisord_forks_a_pass_before_its_later_programs_run(tmp_path: Path):
    """A real supervisord through tf-fleet's launcher: every program after the first of
    the pass runs its command only after supervisord logged its last spawn."""
    starts = tmp_path / "starts"
    starts.mkdir()
    record = f"echo $(date +%%s.%%N) > {starts}/%(program_name)s; exec sleep 600"
    programs = "".join(
        textwrap.dedent(f"""
            [program:{name}]
            command=/bin/sh -c '{record}'
            priority={priority}
            startsecs=0
            stdout_logfile=NONE
            """)
        for name, priority in [("first", 100)] + [(f"p{i:02d}", 999) for i in range(LATER)]
    )
    sock = tmp_path / "s.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        textwrap.dedent(f"""
            [unix_http_server]
            file={sock}
            [supervisord]
            logfile={tmp_path}/supervisord.log
            pidfile={tmp_path}/supervisord.pid
            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
            """)
        + programs
    )
    launched = subprocess.run(
        [sys.executable, "-m", "multiagent.fleet.supervisord.launch", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert launched.returncode == 0, launched.stderr
    target = SupervisorTarget("private", f"unix://{sock}", conf, tmp_path, ".conf")
    supervisor = Supervisor(target)
    pid = wait_for(lambda: _answering(supervisor), what="supervisord to answer")
    try:
        wait_for(lambda: len(list(starts.iterdir())) == LATER + 1, what="every program started")
        states = {p.name: p.state for p in supervisor.processes().values()}
        assert set(states.values()) == {"RUNNING"}, states
        log = (tmp_path / "supervisord.log").read_text().splitlines()
        spawned = [_log_time(line) for line in log if " spawned: " in line]
        assert len(spawned) == LATER + 1
        later = [float((starts / f"p{i:02d}").read_text()) for i in range(LATER)]
        assert min(later) >= max(spawned), "a later program ran before the pass ended"
    finally:
        supervisor.shutdown()
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="supervisord to exit")
