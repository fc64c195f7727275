"""Process facts read from /proc (multiagent/procinfo.py), against real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from multiagent.fleet.host import procinfo
from multiagent.fleet.host.procinfo import (
    child_count,
    command_lines,
    is_running,
    parent_pid,
    process_start_time,
)


def test_running_exited_and_gone_pids():
    sleeper = subprocess.Popen(["sleep", "30"])
    quick = subprocess.Popen(["true"])
    try:
        assert is_running(sleeper.pid)
        # `true` exits at once; until it is reaped it is a zombie: not running.
        deadline = time.monotonic() + 10
        while is_running(quick.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not is_running(quick.pid)
        assert os.path.exists(f"/proc/{quick.pid}")  # still there, as a zombie
    finally:
        sleeper.kill()
        sleeper.wait()
        quick.wait()
    assert not is_running(sleeper.pid)  # reaped: gone from /proc
    assert process_start_time(sleeper.pid) is None


def test_start_time_is_precise():
    before = time.time()
    child = subprocess.Popen(["sleep", "30"])
    try:
        started = process_start_time(child.pid)
        assert started is not None
        assert before - 0.05 <= started <= time.time() + 0.05
    finally:
        child.kill()
        child.wait()


# A parent with one child from its main thread and one from a thread that stays; it
# prints their pids once both run. The count must not depend on which thread forked.
PARENT = """
import subprocess, sys, threading
children = [subprocess.Popen(["sleep", "60"])]
forked, held = threading.Event(), threading.Event()
def fork():
    children.append(subprocess.Popen(["sleep", "60"]))
    forked.set()
    held.wait()
threading.Thread(target=fork, daemon=True).start()
forked.wait()
print(*(child.pid for child in children), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("kernel_lists", [True, False], ids=["children-lists", "proc-scan"])
def test_child_count_counts_every_threads_children(monkeypatch, kernel_lists):
    monkeypatch.setattr(procinfo, "_KERNEL_LISTS_CHILDREN", kernel_lists)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    sleeps = [int(pid) for pid in parent.stdout.readline().split()]
    try:
        assert len(sleeps) == 2
        assert child_count(parent.pid) == 2
        assert child_count(os.getpid()) >= 1  # this test's own child, the parent
    finally:
        parent.kill()
        parent.wait()
        for pid in sleeps:  # orphaned by the kill; this test started them
            os.kill(pid, 9)
    assert child_count(parent.pid) == 0  # gone


def test_command_lines_and_parents_of_real_processes(tmp_path):
    odd = str(tmp_path / "a dir with spaces" / "conf.json")
    code = "import sys; print(flush=True); sys.stdin.read()"
    argv = [sys.executable, "-c", code, "-c", odd, ""]  # an empty last argument too
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"\n"
        assert command_lines()[child.pid] == argv
        assert parent_pid(child.pid) == os.getpid()
    finally:
        child.communicate()
    assert child.pid not in command_lines()
    assert parent_pid(child.pid) is None
