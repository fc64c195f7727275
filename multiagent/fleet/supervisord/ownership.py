"""Which supervisord programs belong to this fleet, which names another owner holds, and
what kind of program each name is.

A shared (system) supervisord also runs other fleets' agents and hand-written programs.
tf-fleet writes, replaces, stops and removes only the programs whose file it wrote for
this fleet (the marker line with the fleet's identity); a name anyone else defines is a
validation error before anything is written.
"""

from __future__ import annotations

import configparser
import glob
import re
import shlex
from collections.abc import Iterable
from pathlib import Path

from multiagent.fleet.model.fleetfile import Fleet, FleetError, Problem, ProgramKind, command_kind
from multiagent.fleet.model.layout import MARKER
from multiagent.fleet.supervisord.client import SupervisorTarget

_PROGRAM = re.compile(r"^\s*\[program:([^\]]+)\]", re.MULTILINE)
_IDENTITY = re.compile(re.escape(MARKER) + r" \(([^)]*)\)")


def marker_of(identity: str) -> str:
    return f"{MARKER} ({identity})"


def is_ours(identity: str, path: Path, text: str | None = None) -> bool:
    """The file was written by tf-fleet for the fleet of this identity (its first line
    says so). `text`: the file's content, when the caller has just read it (None: read
    its first line)."""
    if text is not None:
        return marker_of(identity) in _first_line(text)
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return marker_of(identity) in handle.readline()
    except OSError:
        return False


def _first_line(text: str) -> str:
    """What readline() of the file gives, without its end: up to the first line feed or
    carriage return (open() reads universal newlines)."""
    ends = [i for i in (text.find("\n"), text.find("\r")) if i >= 0]
    return text[: min(ends)] if ends else text


def definitions(target: SupervisorTarget) -> dict[str, list[Path]]:
    """{program name: files defining it} over every file supervisord includes."""
    found: dict[str, list[Path]] = {}
    files = {
        target.config,
        *(Path(p) for pat in target.include_patterns for p in glob.glob(pat)),
    }
    for path in sorted(files):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for name in _PROGRAM.findall(text):
            found.setdefault(name.strip(), []).append(path)
    return found


def check_names_free(
    fleet: Fleet, target: SupervisorTarget, names: Iterable[str], loaded: dict[str, str]
) -> None:
    """Raise FleetError for every program name of this fleet (`names`) another owner holds."""
    if target.mode == "private":
        return  # the supervisord is this fleet's own
    defined = definitions(target)
    problems = []
    for name in sorted(names):
        ours = target.program_file(name)
        owners = [
            p for p in defined.get(name, []) if not (p == ours and is_ours(fleet.identity, p))
        ]
        if owners:
            taken = f"the program name is taken: {_owner(owners[0])}"
            problems.append(_problem(fleet, name, taken))
        elif name in loaded and not (ours.exists() and is_ours(fleet.identity, ours)):
            problems.append(
                _problem(
                    fleet,
                    name,
                    "supervisord runs a program of this name that this fleet did not create",
                )
            )
    if problems:
        raise FleetError(problems)


def _owner(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline()
    except OSError:
        first = ""
    match = _IDENTITY.search(first)
    if match:
        return f"{path} belongs to another fleet ({match.group(1)})"
    return f"{path} defines it (written by hand or by another tool)"


def _problem(fleet: Fleet, name: str, message: str) -> Problem:
    field = f"agents.{name}" if name in fleet.agents else "server"
    return Problem(str(fleet.path), None, name, field, message)


def program_kind(fleet: Fleet, target: SupervisorTarget, name: str) -> str:
    """tf-agent, upstream or server; for a program no longer in the fleet file, from
    the command line of its program file."""
    if name in fleet.agents:
        return fleet.agents[name].kind
    if name == fleet.server_program:
        return ProgramKind.SERVER
    parser = configparser.RawConfigParser(interpolation=None, strict=False)
    try:
        parser.read(target.program_file(name))
        command = parser.get(f"program:{name}", "command", fallback="")
        return command_kind(shlex.split(command.replace("%%", "%")))
    except (configparser.Error, ValueError):
        return ProgramKind.UPSTREAM  # no status file to trust: treated with the most care


def program_kinds(fleet: Fleet, target: SupervisorTarget, names: Iterable[str]) -> dict[str, str]:
    return {name: program_kind(fleet, target, name) for name in names}
