"""Pure helpers of the server package: --agent-ttl, ages, attachments packing, exit codes."""

from __future__ import annotations

import io
import sqlite3
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from fixtures_server import tar_member

from multiagent.fleet.commands.submit import exit_code, pack_attachments
from multiagent.fleet.serverclient import ServerError
from multiagent.server.cli import _ttl, server_command
from multiagent.server.db import Store
from multiagent.server.pages import ago, is_stale, when
from multiagent.server.serve import is_loopback
from multiagent.tokenfile import read_token_file


@pytest.mark.parametrize("text,seconds", [("7d", 604800), ("1d12h", 129600), ("90", 90)])
def test_agent_ttl_takes_durations(text, seconds):
    option = next(p for p in server_command.params if p.name == "agent_ttl")
    assert _ttl(click.Context(server_command), option, text) == seconds


@pytest.mark.parametrize(
    "text,says",
    [("7x", "got '7x'"), ("-5", "got '-5'"), ("0", "longer than 0 seconds, got '0'")],
)
def test_agent_ttl_rejects_with_the_value_named(tmp_path: Path, text, says):
    db = tmp_path / "x.db"
    result = CliRunner().invoke(server_command, ["--agent-ttl", text, "--db", str(db)])
    assert result.exit_code == 2
    assert "--agent-ttl" in result.output and says in result.output
    assert not db.exists()


def test_ages_and_stale():
    assert when(0) == "1970-01-01 00:00:00 UTC" and when(None) == ""
    assert ago(1000, 1000) == "just now"
    assert ago(1060, 1000) == "1 min ago"
    assert ago(5400 + 1000 - 1, 1000) == "89 min ago"
    assert ago(3 * 3600, 0) == "3 h ago"
    assert ago(3 * 86400, 0) == "3 days ago"
    assert not is_stale(900, 0) and is_stale(901, 0)


def test_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")


def test_token_file_plain_and_json(tmp_path: Path):
    plain = tmp_path / "t"
    plain.write_text("  abc\n")
    assert read_token_file(plain) == "abc"
    agent_style = tmp_path / "j"
    agent_style.write_text('{"refresh_token": "xyz", "obtained_at": "2026-01-01"}')
    assert read_token_file(agent_style) == "xyz"
    empty = tmp_path / "e"
    empty.write_text("\n")
    with pytest.raises(ValueError):
        read_token_file(empty)


def test_pack_attachments(tmp_path: Path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "run.sh").write_text("echo run\n")
    (tmp_path / "img.bin").write_bytes(b"\0\1")
    job: dict[str, Any] = {
        "job_queue": "demo",
        "test_data": {"test_cmds": "x", "attachments": [{"agent": "scripts/run.sh"}]},
        "provision_data": {"attachments": [{"local": "img.bin", "agent": "boot/img"}]},
    }
    posted, archive = pack_attachments(job, tmp_path)
    assert archive is not None
    assert job["provision_data"]["attachments"][0]["local"] == "img.bin"  # input untouched
    assert posted["provision_data"]["attachments"] == [{"agent": "boot/img"}]
    assert posted["test_data"]["attachments"] == [{"agent": "scripts/run.sh"}]
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["provision/boot/img", "test/scripts/run.sh"]
        assert tar_member(tar, "test/scripts/run.sh") == b"echo run\n"


def test_pack_attachments_none_and_errors(tmp_path: Path):
    assert pack_attachments({"job_queue": "q"}, tmp_path) == ({"job_queue": "q"}, None)
    with pytest.raises(ServerError, match="does not exist"):
        pack_attachments({"test_data": {"attachments": [{"agent": "nope"}]}}, tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ServerError, match="relative"):
        pack_attachments(
            {"test_data": {"attachments": [{"local": "f", "agent": "../f"}]}}, tmp_path
        )


def test_exit_code():
    assert exit_code({"job_state": "complete", "setup_status": 0, "test_status": 0}) == 0
    assert exit_code({"job_state": "complete", "test_status": 2}) == 1
    assert exit_code({"job_state": "cancelled", "test_status": 0}) == 1
    assert exit_code({"job_state": "complete"}) == 0


def test_a_stores_threads_take_turns_to_write_without_sqlites_busy_wait(tmp_path):
    """Writers of one server queue on its own lock: with SQLite's busy wait off, eight
    threads posting at once never meet a locked database (they would, each on its own
    connection, without the lock), and every post lands."""
    store = Store(tmp_path / "w.db", clock=time.time)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(index: int) -> None:
        store.conn().execute("PRAGMA busy_timeout=0")  # fail at once on a held lock
        start.wait()
        try:
            for n in range(100):
                store.post_agent(f"w{index}", {"state": "waiting", "comment": str(n)})
        except sqlite3.OperationalError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    rows = store.conn().execute("SELECT name, doc FROM agents ORDER BY name").fetchall()
    assert [row["name"] for row in rows] == [f"w{i}" for i in range(8)]
    assert all('"comment": "99"' in row["doc"] for row in rows)
