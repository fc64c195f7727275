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
