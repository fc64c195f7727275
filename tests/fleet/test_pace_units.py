"""How often tf-fleet looks and how it writes many files: the pace of a big fleet."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from multiagent.fleet.commands.up import SOON, next_look
from multiagent.fleet.host import files
from multiagent.fleet.host.files import PRIVATE, write_all_if_changed
from multiagent.fleet.model.facts import ProcessState
from multiagent.fleet.reconcile import scheduler


def test_the_next_look_is_when_the_first_starting_program_is_due_running():
    since: dict[str, float] = {}
    states = {"a": ProcessState.STARTING, "b": ProcessState.STARTING}
    # first seen STARTING now: due in startsecs (capped for a few programs at 0.1 s)
    assert next_look(states, since, {"a": 1.0, "b": 3.0}, 100.0) == pytest.approx(0.1)
    assert since == {"a": 100.0, "b": 100.0}
    # 0.95 s later, a is due in 0.05 s
    assert next_look(states, since, {"a": 1.0, "b": 3.0}, 100.95) == pytest.approx(0.05 + SOON)
    # past due: soon, since supervisord moves it on at its next pass
    assert next_look(states, since, {"a": 1.0, "b": 3.0}, 102.0) == pytest.approx(SOON)
    # a RUNNING: only b counts, and a is forgotten
    states["a"] = ProcessState.RUNNING
    assert next_look(states, since, {"a": 1.0, "b": 3.0}, 102.95) == pytest.approx(0.05 + SOON)
    assert "a" not in since


def test_many_programs_are_looked_at_no_more_than_twice_a_second_until_due():
    states = {f"p{i}": ProcessState.STARTING for i in range(100)}
    assert next_look(states, {}, {}, 0.0) == pytest.approx(0.5)
    backoff = {f"p{i}": ProcessState.BACKOFF for i in range(100)}
    assert next_look(backoff, {}, {}, 0.0) == pytest.approx(0.5)


def test_restart_looks_fast_just_after_asking_a_few_agents_then_at_the_usual_pace(
    monkeypatch,
):
    monkeypatch.setattr(scheduler.time, "monotonic", lambda: 10.0)
    few = scheduler.FEW_TICK
    assert scheduler._pause([], few, asked_at=9.9) == scheduler.ASKED_TICK
    assert scheduler._pause([], few, asked_at=9.0) == few
    assert scheduler._pause([], 0.2, asked_at=9.9) == 0.2  # many agents: no faster looks


def test_many_files_are_written_at_once_in_order_and_only_if_changed(tmp_path):
    writes = [(tmp_path / f"f{i:02d}.conf", f"text {i}\n", PRIVATE, None) for i in range(40)]
    assert write_all_if_changed(writes) == [w[0] for w in writes]
    for path, text, _, _ in writes:
        assert path.read_text() == text
        assert stat.S_IMODE(path.stat().st_mode) == PRIVATE
    writes[7] = (writes[7][0], "changed\n", PRIVATE, None)
    assert write_all_if_changed(writes) == [writes[7][0]]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_write_among_many_is_raised_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "d").mkdir()
    writes = [(tmp_path / "d" / f"f{i:02d}", "x", PRIVATE, None) for i in range(40)]
    blocked = tmp_path / "d" / "f13"
    blocked.mkdir()  # a directory where a file goes: os.replace fails
    with pytest.raises(OSError):
        write_all_if_changed(writes)
    assert not [p for p in (tmp_path / "d").iterdir() if p.name.endswith(".tmp")]


def test_a_temporary_file_is_new_private_and_never_follows_a_link(tmp_path):
    target = tmp_path / "conf"
    fd, tmp = files._new_temp(target)
    os.close(fd)
    assert tmp.parent == tmp_path and tmp.name.startswith(".conf.")
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o600
    fd2, tmp2 = files._new_temp(target)
    os.close(fd2)
    assert tmp2 != tmp


def test_write_atomic_replaces_a_symlink_without_writing_through_it(tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep\n")
    link = tmp_path / "conf"
    link.symlink_to(elsewhere)
    files.write_atomic(link, "new\n", PRIVATE)
    assert elsewhere.read_text() == "keep\n"
    assert not link.is_symlink() and link.read_text() == "new\n"


def test_a_program_counts_as_starting_from_when_the_look_was_asked():
    """An answer about 500 programs takes supervisord a while to send: a program it said
    was STARTING was so when the look was asked."""
    since: dict[str, float] = {}
    states = {f"p{i}": ProcessState.STARTING for i in range(30)}
    wait = next_look(states, since, {}, now=100.3, asked=100.0)
    assert since["p0"] == 100.0
    assert wait == pytest.approx(0.5)  # many programs: at most every 0.5 s until due
    assert next_look(states, since, {}, now=100.9) == pytest.approx(0.1 + SOON)
