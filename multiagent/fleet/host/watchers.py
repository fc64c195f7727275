"""`tf-fleet submit --wait` processes on this host that follow a job on a given server:
`down` stopping the fleet's embedded server under them would make them fail with a
connection error, though their job ended well."""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass

from multiagent.fleet.host.procinfo import command_lines

DEFAULT_SERVER = "http://127.0.0.1:8585"  # submit's --server default
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Watcher:
    pid: int
    job_file: str

    def text(self) -> str:
        return f"pid {self.pid} (tf-fleet submit {self.job_file} --wait)"


def _where(url: str) -> tuple[str, int | None]:
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    return ("loopback" if host in LOOPBACK else host), port


def _submit_args(cmdline: list[str]) -> list[str] | None:
    """The arguments after `submit`, for a tf-fleet command line (`tf-fleet ...` or
    `python -m multiagent ...`) that runs submit with --wait; else None."""
    for i, word in enumerate(cmdline[:6]):
        if os.path.basename(word) == "tf-fleet" or (
            word == "multiagent" and i > 0 and cmdline[i - 1] == "-m"
        ):
            rest = cmdline[i + 1 :]
            if "submit" in rest:
                args = rest[rest.index("submit") + 1 :]
                return args if "--wait" in args else None
    return None


def _server_of(pid: int, args: list[str]) -> str:
    for i, word in enumerate(args):
        if word == "--server" and i + 1 < len(args):
            return args[i + 1]
        if word.startswith("--server="):
            return word.split("=", 1)[1]
    return _environment(pid).get("TESTFLINGER_SERVER") or DEFAULT_SERVER


def _environment(pid: int) -> dict[str, str]:
    """The process's environment as it started; empty where this user may not read it."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return {}
    pairs = (os.fsdecode(entry).partition("=") for entry in raw.split(b"\0") if entry)
    return {key: value for key, _, value in pairs}


def watchers(server_url: str) -> list[Watcher]:
    """Every `submit --wait` on this host following a job on `server_url`."""
    wanted = _where(server_url)
    found = []
    for pid, cmdline in command_lines().items():
        args = _submit_args(cmdline)
        if args is None or pid == os.getpid():
            continue
        if _where(_server_of(pid, args)) == wanted:
            job = next((a for a in args if not a.startswith("-")), "?")
            found.append(Watcher(pid, job))
    return found
