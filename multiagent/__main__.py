from __future__ import annotations

from multiagent.fleet.cli import main

main(prog_name="tf-fleet")
