"""Desired files + what is on disk + supervisord's state -> what `up` must do. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from multiagent.fleet.model.facts import ProcessState

if TYPE_CHECKING:
    from multiagent.fleet.model.render import Program

ADD = "add"
START = "start"  # known to supervisord but not running (after `down` in system mode, FATAL)
RESTART = "restart"  # a file the process reads at start changed: safe restart
REPLACE = "replace"  # the program entry changed: drain, then swap the program
REMOVE = "remove"  # gone from the fleet file: drain, stop, remove
UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Action:
    name: str
    kind: str
    reasons: tuple[str, ...] = ()

    @property
    def touches_process(self) -> bool:
        return self.kind != UNCHANGED


@dataclass(frozen=True)
class Observed:
    """What the shell found: file texts on disk and supervisord's view of each program."""

    disk: dict[Path, str | None]  # current text of each desired file (None: missing)
    managed: frozenset[str]  # programs of this fleet that exist on disk or in supervisord
    loaded: dict[str, str] = field(default_factory=dict)  # program -> process state
    started: dict[str, float] = field(default_factory=dict)  # program -> start time (epoch)
    modified: dict[Path, float] = field(default_factory=dict)  # config file -> mtime
    pending_in_supervisor: frozenset[str] = frozenset()  # reloadConfig's "changed"
    held: frozenset[str] = frozenset()  # agents told to stay down (drain hold)
    # Left behind by an upgrade in place (model/staleness.py): program -> the reason.
    entry_stale: dict[str, str] = field(default_factory=dict)  # its entry names lost files
    code_changed: dict[str, str] = field(default_factory=dict)  # started before the code


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]

    def of_kind(self, *kinds: str) -> list[Action]:
        return [a for a in self.actions if a.kind in kinds]

    @property
    def is_noop(self) -> bool:
        return all(not a.touches_process for a in self.actions)


def make_plan(desired: dict[str, Program], observed: Observed) -> Plan:
    actions = [_action_for(name, program, observed) for name, program in sorted(desired.items())]
    for name in sorted(observed.managed - desired.keys()):
        actions.append(Action(name, REMOVE, ("no longer in the fleet file",)))
    return Plan(tuple(actions))


def _action_for(name: str, program: Program, observed: Observed) -> Action:
    if name not in observed.loaded:
        return Action(name, ADD, ("new",) if name not in observed.managed else ("not loaded",))
    if (
        observed.disk.get(program.program_path) != program.program_text
        or name in observed.pending_in_supervisor
    ):
        stale = observed.entry_stale.get(name)
        return Action(name, REPLACE, ("program entry changed", *([stale] if stale else [])))
    if name in observed.entry_stale:
        # The installed tf-fleet renders the same entry: only a reinstall can mend it.
        why = f"{observed.entry_stale[name]}; reinstall tf-fleet, a restart would fail"
        return Action(name, UNCHANGED, (why,))
    reasons = []
    started = observed.started.get(name, 0.0)
    for path, text in program.config_files.items():
        if observed.disk.get(path) != text:
            reasons.append(f"{path.name} changed")
        elif started and observed.modified.get(path, 0.0) > started:
            reasons.append(f"{path.name} changed after the process started")
    if name in observed.code_changed:
        reasons.append(observed.code_changed[name])
    if reasons:
        return Action(name, RESTART, tuple(reasons))
    state = observed.loaded[name]
    if state in ProcessState.DOWN:
        # Held down with no change left to swap in (the change was undone, or an older
        # tf-fleet left it so): nothing else would ever start it again.
        held = name in observed.held
        why = f"held down ({state}), no change pending" if held else f"process is {state}"
        return Action(name, START, (why,))
    return Action(name, UNCHANGED)
