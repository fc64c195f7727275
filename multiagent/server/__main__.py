"""`python -m multiagent.server`: the `tf-fleet server` command on its own."""

from __future__ import annotations

from multiagent.server.cli import server_command

if __name__ == "__main__":
    server_command(prog_name="python -m multiagent.server")
