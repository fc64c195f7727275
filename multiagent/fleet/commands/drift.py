"""What `status` says when the host and the fleet file disagree: programs this fleet runs
that the file no longer names, agents it names that are not loaded or run on other
files, and processes of the fleet that run with no supervisord. Each line ends with the
command that puts it right; any of them makes `status` exit 1."""

from __future__ import annotations

from multiagent.fleet.host import pending
from multiagent.fleet.host.orphans import orphans
from multiagent.fleet.host.rendered import Rendered, render_or_reuse
from multiagent.fleet.messages import agents_listed, plural
from multiagent.fleet.model import plan as planning
from multiagent.fleet.model.facts import ProcessInfo
from multiagent.fleet.model.fleetfile import Fleet
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.staleness import CODE_CHANGED
from multiagent.fleet.reconcile.observe import look, make_plan
from multiagent.fleet.supervisord.client import Supervisor

APPLY = "`tf-fleet plan` shows it; `tf-fleet up` applies it, each agent after its job"


def drift(
    fleet: Fleet,
    supervisor: Supervisor,
    supervisord_running: bool,
    processes: dict[str, ProcessInfo] | None = None,
    rendered: Rendered | None = None,
) -> list[str]:
    """`processes`: what supervisord said of its processes just now (`status` has asked);
    `rendered`: the fleet file's rendering, if made already."""
    layout = Layout(fleet.state_dir)
    if not supervisord_running:
        strays = orphans(fleet, layout, None)
        if not strays:
            return []
        listed = ", ".join(
            f"{name} (pid {', '.join(map(str, pids))})" for name, pids in sorted(strays.items())
        )
        return [
            f"drift: supervisord is not running, yet {plural(len(strays), 'program')} of this"
            f" fleet run without it: {listed}; `tf-fleet up` starts supervisord and takes"
            " each over after its job"
        ]
    rendered = rendered or render_or_reuse(fleet, supervisor.target)
    observed = look(fleet, layout, supervisor, rendered, True, processes)
    plan = make_plan(fleet, layout, supervisor, rendered, observed)
    # A change `up --no-wait` asked for waits in the state dir: its row says so; not drift.
    asked = set(pending.staged(layout))
    said = []
    for kind, words in (
        (planning.REMOVE, "running, but not in the fleet file"),
        (planning.ADD, "in the fleet file, but not loaded"),
        (planning.RESTART, "running on other files than the fleet file gives"),
        (planning.REPLACE, "loaded with another program entry than the fleet file gives"),
    ):
        # Older code than installed is `status`'s own line (model/staleness.py), not drift.
        names = [
            a.name
            for a in plan.of_kind(kind)
            if a.name not in asked
            and not (a.reasons and all(r.startswith(CODE_CHANGED) for r in a.reasons))
        ]
        if names:
            said.append(f"drift: {words}: {agents_listed(names)}; {APPLY}")
    return said
