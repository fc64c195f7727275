"""The server's settings besides where it listens, and how a request reads them."""

from __future__ import annotations

from dataclasses import dataclass, field

from multiagent.server.db import DAY
from multiagent.server.limits import Limits


@dataclass(frozen=True)
class Policy:
    """Who may do what and how much: the server's settings besides where it listens."""

    agent_ttl: float = 7 * DAY  # agents silent this long are forgotten
    token: str | None = None  # a shared bearer token that may do everything
    require_auth: bool = False  # callers without a token get 401, not contributor rights
    any_provision_data: bool = False  # any provision_data mapping (home-made connectors)
    limits: Limits = field(default_factory=Limits)
    public_pages: bool = False  # the agents and queues pages without a token
    # A job handed out whose agent has not answered for it this long (counted from the
    # server's start too) goes back to waiting: the answer never reached the agent.
    ack_timeout: float = 300.0


def policy() -> Policy:
    """The running app's policy (inside a request or an app context)."""
    from flask import current_app

    return current_app.config["TF_POLICY"]
