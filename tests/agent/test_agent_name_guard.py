"""No other local user can block or impersonate an agent name: a throwaway user binds the
abstract socket name, and tries to create, open, lock or plant a link at the lock file;
the agent still starts, runs jobs and stays up, and a second agent of its name is still
refused with the holder's pid."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_agent import job

from multiagent.agent import status as status_mod
from multiagent.agent.status import NameGuard
from multiagent.vocabulary import AgentExit

ATTACK = r"""
import errno, json, os, socket, sys
address, lock_dir, lock = bytes.fromhex(sys.argv[1]), sys.argv[2], sys.argv[3]
path = os.path.join(lock_dir, lock)
sock = socket.socket(socket.AF_UNIX)
sock.bind(address)
sock.listen(1)
tried = {}
for what, attempt in (
    ("create", lambda: os.open(path, os.O_CREAT | os.O_RDWR, 0o666)),
    ("open", lambda: os.open(path, os.O_RDONLY)),
    ("symlink", lambda: os.symlink("/tmp", path)),
    ("mkdir", lambda: os.makedirs(lock_dir)),
):
    try:
        attempt()
        tried[what] = "done"
    except OSError as exc:
        tried[what] = errno.errorcode[exc.errno]
print(json.dumps(tried), flush=True)
sys.stdin.read()  # holds the socket name until the test ends
"""


def test_another_user_can_neither_block_nor_take_the_name(
    shared_server, make_agent, throwaway_user: str
):
    user = pwd.getpwnam(throwaway_user)
    agent = make_agent(shared_server.url, polling_interval=0.5, test_command="echo ran")
    guard = NameGuard(agent.name, shared_server.url)
    lock_dir = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".local" / "state" / "tf-agent"
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    attacker = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--clear-groups",
            python,
            "-c",
            ATTACK,
            guard.address.hex(),
            str(lock_dir),
            guard.lock_name,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert attacker.stdout is not None
        tried = json.loads(attacker.stdout.readline())
        assert tried == {
            "create": "EACCES",
            "open": "EACCES",
            "symlink": "EACCES",
            "mkdir": "EACCES",
        }
        assert status_mod.holder(guard.address)[1] == user.pw_uid  # it holds the socket name

        agent.start()  # no BACKOFF: the agent polls
        first_pid = agent.proc.pid
        job_id = shared_server.submit(job(agent, "x"))
        shared_server.wait_job_state(job_id, {"complete"}, timeout=15)
        assert shared_server.result(job_id)["test_status"] == 0

        second = subprocess.run(agent.command(), capture_output=True, text=True, timeout=10)
        assert second.returncode == AgentExit.NAME_TAKEN
        assert f"pid {first_pid} holds the name" in second.stderr

        # Killed, the agent leaves the name free for its successor, the attacker or not.
        agent.signal(signal.SIGKILL)
        agent.wait_exit(5)
        agent.start()
        again = shared_server.submit(job(agent, "x"))
        shared_server.wait_job_state(again, {"complete"}, timeout=15)
        assert agent.proc.poll() is None and attacker.poll() is None
        assert status_mod.holder(guard.address)[1] == user.pw_uid
    finally:
        attacker.kill()
        attacker.wait(5)


HOLD = r"""
import json, sys
from multiagent.agent.status import NameGuard, NameTaken
guard = NameGuard(sys.argv[1], sys.argv[2], own_dir=sys.argv[3])
try:
    guard.acquire()
except NameTaken as exc:
    print(json.dumps({"taken_by": exc.pid}), flush=True)
    sys.exit(3)
print(json.dumps({"where": guard.where, "squatter": guard.squatter}), flush=True)
sys.stdin.read()  # holds the name until the test ends
"""

SQUAT = r"""
import errno, json, os, socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.bind(bytes.fromhex(sys.argv[1]))
sock.listen(1)
tried = {}
for what, attempt in (
    ("create", lambda: os.open(os.path.join(sys.argv[2], sys.argv[3]), os.O_CREAT | os.O_RDWR)),
    ("symlink", lambda: os.symlink("/tmp", os.path.join(sys.argv[2], sys.argv[3]))),
):
    try:
        attempt()
        tried[what] = "done"
    except OSError as exc:
        tried[what] = errno.errorcode[exc.errno]
print(json.dumps(tried), flush=True)
sys.stdin.read()
"""


def _as(user: str, *argv: str) -> subprocess.Popen[str]:
    entry = pwd.getpwnam(user)
    root = str(Path(__file__).resolve().parents[2])
    return subprocess.Popen(
        ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
        + list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": root, "HOME": "/nonexistent"},
        cwd="/",
    )


def test_a_user_without_a_home_holds_the_name_in_its_own_dir_whoever_squats_the_socket(
    tmp_path_factory, throwaway_user: str, another_throwaway_user: str
):
    """A fleet's agent user has no home: its name is locked in its own 0700 dir, and
    another user binding the abstract socket name first neither blocks nor joins it."""
    agent_user = pwd.getpwnam(throwaway_user)
    base = tmp_path_factory.mktemp("guard")
    base.chmod(0o755)
    for parent in base.parents:  # the agent's user must reach its own dir
        if parent.stat().st_uid == 0 and not parent.stat().st_mode & 0o001:
            parent.chmod(parent.stat().st_mode | 0o001)
    own = base / "agent"
    own.mkdir(mode=0o700)
    os.chown(own, agent_user.pw_uid, agent_user.pw_gid)
    python = sys.executable
    probe = _as(throwaway_user, python, "-c", "import multiagent.agent.status")
    if probe.wait(30) != 0:
        pytest.skip("the throwaway user cannot read this checkout's package")
    guard = NameGuard("dut-guard", "http://127.0.0.1:1")
    procs = []
    try:
        squatter = _as(
            another_throwaway_user,
            python,
            "-c",
            SQUAT,
            guard.address.hex(),
            str(own),
            guard.lock_name,
        )
        procs.append(squatter)
        assert squatter.stdout is not None
        assert json.loads(squatter.stdout.readline()) == {"create": "EACCES", "symlink": "EACCES"}

        first = _as(throwaway_user, python, "-c", HOLD, "dut-guard", "http://127.0.0.1:1", str(own))
        procs.append(first)
        assert first.stdout is not None
        assert json.loads(first.stdout.readline()) == {"where": "own-dir", "squatter": None}
        assert (own / guard.lock_name).stat().st_uid == agent_user.pw_uid

        second = _as(
            throwaway_user, python, "-c", HOLD, "dut-guard", "http://127.0.0.1:1", str(own)
        )
        procs.append(second)
        out, _ = second.communicate(timeout=30)
        assert second.returncode == 3
        assert json.loads(out) == {"taken_by": first.pid}

        # No private dir at all: the socket squatted by another user is not obeyed.
        shared = base / "shared"
        shared.mkdir(mode=0o777)
        shared.chmod(0o777)
        unguarded = _as(
            throwaway_user, python, "-c", HOLD, "dut-guard", "http://127.0.0.1:1", str(shared)
        )
        procs.append(unguarded)
        assert unguarded.stdout is not None
        squatter_uid = pwd.getpwnam(another_throwaway_user).pw_uid
        assert json.loads(unguarded.stdout.readline()) == {
            "where": "unguarded",
            "squatter": squatter_uid,
        }
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
