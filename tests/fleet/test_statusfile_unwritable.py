"""What makes a status file unable to prove idleness the moment it happens: a full
filesystem (a real tmpfs, filled), a directory its writer may not write."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from multiagent.fleet.host.statusfile import read_status

NOBODY = 65534


def _write(path: Path) -> None:
    path.write_text(json.dumps({"pid": 1, "state": "waiting", "job_id": None}))


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "run"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_filesystem_is_seen_on_the_first_read(small_tmpfs: Path) -> None:
    status = small_tmpfs / "a1.json"
    _write(status)
    assert read_status(status).unwritable is None
    filler = os.open(small_tmpfs / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(filler, b"\0" * 4096):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(filler)
    read = read_status(status)
    assert read.data is not None and read.data["state"] == "waiting"  # still readable
    assert read.unwritable == "its filesystem is full"


@pytest.mark.skipif(os.geteuid() != 0, reason="gives files to another user")
def test_a_directory_its_writer_may_not_write(tmp_path: Path) -> None:
    run = tmp_path / "a1"
    run.mkdir()
    status = run / "a1.json"
    _write(status)
    os.chown(status, NOBODY, NOBODY)
    os.chown(run, NOBODY, NOBODY)
    run.chmod(0o700)
    assert read_status(status).unwritable is None
    run.chmod(0o500)
    assert read_status(status).unwritable == (
        f"its directory {run} is not writable by its owner (uid {NOBODY})"
    )
