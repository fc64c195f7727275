"""Facts of this host that a valid fleet file can still get wrong, checked before `up`
writes anything; reported like validation errors."""

from __future__ import annotations

import os
import pwd

from .context import Context
from .fleet import FleetError, Problem


def check_host(ctx: Context) -> None:
    problems = []
    for name, agent in ctx.fleet.agents.items():
        if not agent.user:
            continue
        try:
            pwd.getpwnam(agent.user)
        except KeyError:
            problems.append(
                Problem(
                    str(ctx.fleet.path),
                    None,
                    name,
                    "user",
                    f"no such user {agent.user!r} on this host",
                )
            )
        if os.geteuid() != 0 and ctx.target.mode == "private":
            problems.append(
                Problem(
                    str(ctx.fleet.path),
                    None,
                    name,
                    "user",
                    "running agents as another user needs tf-fleet (and so its supervisord)"
                    " to run as root",
                )
            )
    if problems:
        raise FleetError(problems)
