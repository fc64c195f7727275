"""`python -m multiagent.agent`."""

from __future__ import annotations

from multiagent.agent.main import run

run()
