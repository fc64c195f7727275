"""`validate`: every check of the fleet file that needs no live host, rendering included
(what `plan` refuses for a value supervisord cannot hold, `validate` refuses too)."""

from __future__ import annotations

from multiagent.fleet.host.rendered import stable_python
from multiagent.fleet.model.fleetfile import Fleet, FleetError, Problem
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.render import RenderContext, render

# What only a look at the host can check, and which command looks.
LEFT_TO_PLAN = (
    "that no other fleet or hand-written program holds an agent's name (system mode)",
    "what supervisord runs now",
)
LEFT_TO_UP = (
    "that `user:` users exist",
    "that the embedded server's port is free",
    "that the supervisord include dir is writable (system mode)",
)


def validate(fleet: Fleet) -> None:
    """Raise FleetError for anything rendering refuses. The program dir does not change
    what renders or not: the private one stands for the host's."""
    context = RenderContext(
        python=stable_python(), program_dir=Layout(fleet.state_dir).private_program_dir
    )
    try:
        render(fleet, context)
    except ValueError as exc:
        raise FleetError([Problem(str(fleet.path), None, None, "(render)", str(exc))]) from exc
