"""The door an upstream agent's program goes through: `python -S <package>/fleet/host/gate.py
--drain-file FLAG -- COMMAND...` (no `site`, standard library and this package only, so
it adds a few milliseconds to the agent's start).

Upstream's agent knows no drain flag, and it posts `waiting` to its server at every start,
which would undo a drain (state `offline`) at each restart. So while the agent's drain
flag is there, the program waits here instead of running the agent: it sets the agent
`offline` on its server (with the agent's own credential, from the agent's command line)
and looks at the flag twice a second. Once the flag is gone (`resume`, or `up` swapping
the program), it becomes the agent with exec: same pid, nothing left of the gate. An agent
that is not drained starts as before, a few milliseconds later.
"""

from __future__ import annotations

import os
import sys
import time

if __name__ == "__main__":  # run as a script: imports need the package's parent
    here = os.path.realpath(__file__)  # <parent>/multiagent/fleet/host/gate.py
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(here))))

from multiagent import jsonio  # noqa: E402 - after sys.path
from multiagent.vocabulary import (  # noqa: E402 - after sys.path
    AgentState,
    drained_comment,
    read_drain,
)

LOOK_EVERY = 0.5  # seconds between looks at the drain flag while it holds the agent
RETRY_EVERY = 5.0  # seconds between tries to set the agent offline on an unanswering server


def split_argv(argv: list[str]) -> tuple[str, list[str]]:
    """(the drain flag's path, the agent's command) from `--drain-file F -- COMMAND...`."""
    if len(argv) < 4 or argv[0] != "--drain-file" or argv[2] != "--":
        raise SystemExit("usage: gate --drain-file FLAG -- COMMAND...")
    return argv[1], argv[3:]


def option(command: list[str], name: str) -> str | None:
    """The value of `name` (`-c`, `--token-file`) on the agent's command line."""
    for index, word in enumerate(command[:-1]):
        if word == name:
            return command[index + 1]
    return None


def set_offline(command: list[str], reason: str = "") -> tuple[bool, str]:
    """Tell the agent's server it is offline: whether it took it, and what happened in
    words (never raises)."""
    from multiagent.fleet.serverclient import ServerClient, ServerError

    conf_path = option(command, "-c")
    try:
        # tf-fleet writes the agent's config as JSON (which is YAML to the agent).
        with open(conf_path or "", encoding="utf-8") as fh:
            conf = jsonio.load(fh)
        server, name = str(conf["server_address"]), str(conf["agent_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"cannot read the agent's config {conf_path}: {exc}"
    try:
        client = ServerClient.with_token_file(server, option(command, "--token-file"))
        client.set_agent_state(name, AgentState.OFFLINE, drained_comment(reason))
    except ServerError as exc:
        return False, f"cannot set {name} offline on {server}: {exc}"
    return True, f"{name} is offline on {server}"


def main(argv: list[str]) -> None:
    flag, command = split_argv(argv)
    held = told = False
    next_try = 0.0
    while (found := read_drain(flag)) is not None:
        held = True
        if not told and time.monotonic() >= next_try:
            told, text = set_offline(command, found[1])
            next_try = time.monotonic() + RETRY_EVERY
            print(f"tf-fleet: drained ({flag}), the agent waits until resumed: {text}", flush=True)
        time.sleep(LOOK_EVERY)
    if held:
        print("tf-fleet: resumed; starting the agent", flush=True)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        raise SystemExit(f"cannot run {command[0]}: {exc}") from exc


if __name__ == "__main__":
    main(sys.argv[1:])
