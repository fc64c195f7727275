"""`tf-fleet server --db X <sub-command>`: the group's --db reaches every sub-command (it
was once ignored: clients landed in the default database and `revoke` said "revoked 0")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from multiagent.server.accounts import Accounts
from multiagent.server.cli import server_command
from multiagent.server.db import Store


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The default database under tmp_path/state, so a test sees whether it was written."""
    return {"XDG_STATE_HOME": str(tmp_path / "state")}


def default_db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "tf-fleet" / "server.db"


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(server_command, list(args), env=env)


def accounts(db: Path) -> Accounts:
    return Accounts(Store(db, clock=lambda: 0.0))


def test_create_client_and_clients_use_the_group_db(tmp_path: Path, env: dict[str, str]):
    db = tmp_path / "x.db"
    made = run(env, "--db", str(db), "create-client", "--client-id", "ci", "--role", "admin")
    assert made.exit_code == 0, made.output
    assert "created client 'ci' (admin)" in made.output
    assert accounts(db).has_clients()
    assert not default_db(tmp_path).exists()
    listed = run(env, "--db", str(db), "clients")
    assert listed.exit_code == 0, listed.output
    assert [json.loads(line)["client_id"] for line in listed.output.splitlines()] == ["ci"]
    assert not default_db(tmp_path).exists()


def test_agent_token_and_revoke_use_the_group_db(tmp_path: Path, env: dict[str, str]):
    db, out = tmp_path / "x.db", tmp_path / "dev1.token"
    wrote = run(env, "--db", str(db), "agent-token", "--name", "dev1", "--out", str(out))
    assert wrote.exit_code == 0, wrote.output
    assert out.exists() and accounts(db).has_clients()
    revoked = run(env, "--db", str(db), "revoke", "--client-id", "dev1")
    assert revoked.exit_code == 0, revoked.output
    assert "revoked 1 refresh token of 'dev1'" in revoked.output
    assert not default_db(tmp_path).exists()


def test_delete_client_uses_the_group_db(tmp_path: Path, env: dict[str, str]):
    db = tmp_path / "x.db"
    assert run(env, "--db", str(db), "create-client", "--client-id", "gone").exit_code == 0
    deleted = run(env, "--db", str(db), "delete-client", "--client-id", "gone")
    assert deleted.exit_code == 0, deleted.output
    assert "deleted client 'gone'" in deleted.output
    assert not accounts(db).has_clients()
    assert not default_db(tmp_path).exists()


def test_the_sub_command_db_still_works_and_the_same_file_twice_is_fine(
    tmp_path: Path, env: dict[str, str]
):
    db = tmp_path / "x.db"
    after = run(env, "create-client", "--db", str(db), "--client-id", "a1")
    both = run(env, "--db", str(db), "create-client", "--db", str(db), "--client-id", "a2")
    assert after.exit_code == 0 and both.exit_code == 0, after.output + both.output
    assert [c["client_id"] for c in accounts(db).all()] == ["a1", "a2"]
    assert not default_db(tmp_path).exists()


@pytest.mark.parametrize(
    "sub",
    [
        ["create-client", "--client-id", "c"],
        ["agent-token", "--name", "c", "--out", "OUT"],
        ["revoke", "--client-id", "c"],
        ["delete-client", "--client-id", "c"],
        ["clients"],
    ],
)
def test_two_different_dbs_are_refused_naming_both(
    tmp_path: Path, env: dict[str, str], sub: list[str]
):
    x, y = tmp_path / "x.db", tmp_path / "y.db"
    args = [str(tmp_path / "t") if a == "OUT" else a for a in sub]
    result = run(env, "--db", str(x), args[0], "--db", str(y), *args[1:])
    assert result.exit_code == 2
    assert "--db given twice" in result.output and str(x) in result.output
    assert str(y) in result.output
    assert not x.exists() and not y.exists() and not default_db(tmp_path).exists()
    assert not (tmp_path / "t").exists()
