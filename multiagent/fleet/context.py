"""A loaded fleet with everything the commands derive from it: where its supervisord
listens, where its files go, its rendering, and what kind of program each name is."""

from __future__ import annotations

import configparser
import shlex
import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from multiagent.fleet.model.fleetfile import (
    SERVER,
    UPSTREAM,
    Fleet,
    FleetError,
    Problem,
    command_kind,
)
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.render import Rendering
from multiagent.fleet.supervisord.client import Supervisor, SupervisorTarget, target_for

if TYPE_CHECKING:  # the scheduler is imported by what changes agents, when it does
    from multiagent.fleet.reconcile.scheduler import Env


def stable_python() -> str:
    """The interpreter for rendered programs, named the same however tf-fleet was started
    (`tf-fleet`'s shebang says python3, `.venv/bin/python -m multiagent` says python):
    a different spelling would change every program entry and replace every agent.
    Symlinks are kept: resolving them would leave the virtualenv."""
    for name in ("python3", "python"):
        candidate = Path(sys.prefix) / "bin" / name
        if candidate.exists():
            return str(candidate)
    return sys.executable


class Context:
    """Rendering is done on first use: `status` and `restart` do not need it (nor
    Jinja2's import)."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.target: SupervisorTarget = target_for(fleet)
        self.layout = Layout(fleet.state_dir)
        self.supervisor = Supervisor(self.target)
        self.rendering_key = ""  # of the rendering's inputs, once rendering is asked for
        self.fresh_rendering: Rendering | None = None  # rendered in this run, not reused
        self.rendering_reused = False  # the files on disk are the rendering

    @cached_property
    def rendering(self) -> Rendering:
        """The files on disk when the record of the last rendering says they are what
        rendering gives (a no-change `up` needs no Jinja2); else rendered now, and
        `fresh_rendering` set for `up` to record."""
        from multiagent.fleet.host import rendered
        from multiagent.fleet.model.render import RenderContext, render

        ctx = RenderContext(
            python=stable_python(),
            program_dir=self.target.program_dir,
            program_suffix=self.target.program_suffix,
        )
        self.rendering_key = rendered.inputs_key(self.fleet, ctx, rendered.code_digest())
        reused = rendered.reuse(self.layout, self.rendering_key)
        if reused is not None:
            self.rendering_reused = True
            return reused
        try:
            self.fresh_rendering = render(self.fleet, ctx)
        except ValueError as exc:
            problem = Problem(str(self.fleet.path), None, None, "(render)", str(exc))
            raise FleetError([problem]) from exc
        return self.fresh_rendering

    def env(self) -> Env:
        from multiagent.fleet.reconcile.scheduler import Env

        return Env(
            self.supervisor,
            self.layout,
            self.fleet.restart.restart_dir,
            self.fleet.server.url,
            self.token_files(),
        )

    def token_files(self) -> dict[str, str]:
        """Each agent's credential file, where it has one."""
        from multiagent.fleet.model.render import token_file

        found = {name: token_file(self.fleet, agent) for name, agent in self.fleet.agents.items()}
        return {name: path for name, path in found.items() if path}

    def program_file(self, name: str) -> Path:
        return self.target.program_dir / f"{name}{self.target.program_suffix}"

    def kind(self, name: str) -> str:
        """tf-agent, upstream or server; for a program no longer in the fleet file, from
        the command line of its program file."""
        if name in self.fleet.agents:
            return self.fleet.agents[name].kind
        if name == self.fleet.server_program:
            return SERVER
        parser = configparser.RawConfigParser(interpolation=None, strict=False)
        try:
            parser.read(self.program_file(name))
            command = parser.get(f"program:{name}", "command", fallback="")
            return command_kind(shlex.split(command.replace("%%", "%")))
        except (configparser.Error, ValueError):
            return UPSTREAM  # no status file to trust: treated with the most care
