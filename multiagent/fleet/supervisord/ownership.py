"""Which supervisord programs belong to this fleet, and which names another owner holds.

A shared (system) supervisord also runs other fleets' agents and hand-written programs.
tf-fleet writes, replaces, stops and removes only the programs whose file it wrote for
this fleet (the marker line with the fleet's identity); a name anyone else defines is a
validation error before anything is written.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

from multiagent.fleet.context import Context
from multiagent.fleet.model.fleetfile import FleetError, Problem
from multiagent.fleet.model.layout import MARKER

_PROGRAM = re.compile(r"^\s*\[program:([^\]]+)\]", re.MULTILINE)
_IDENTITY = re.compile(re.escape(MARKER) + r" \(([^)]*)\)")


def marker_of(ctx: Context) -> str:
    return f"{MARKER} ({ctx.fleet.identity})"


def is_ours(ctx: Context, path: Path, text: str | None = None) -> bool:
    """The file was written by tf-fleet for this fleet (its first line says so). `text`:
    the file's content, when the caller has just read it (None: read its first line)."""
    if text is not None:
        return marker_of(ctx) in _first_line(text)
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return marker_of(ctx) in handle.readline()
    except OSError:
        return False


def _first_line(text: str) -> str:
    """What readline() of the file gives, without its end: up to the first line feed or
    carriage return (open() reads universal newlines)."""
    ends = [i for i in (text.find("\n"), text.find("\r")) if i >= 0]
    return text[: min(ends)] if ends else text


def definitions(ctx: Context) -> dict[str, list[Path]]:
    """{program name: files defining it} over every file supervisord includes."""
    found: dict[str, list[Path]] = {}
    files = {
        ctx.target.config,
        *(Path(p) for pat in ctx.target.include_patterns for p in glob.glob(pat)),
    }
    for path in sorted(files):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for name in _PROGRAM.findall(text):
            found.setdefault(name.strip(), []).append(path)
    return found


def check_names_free(ctx: Context, loaded: dict[str, str]) -> None:
    """Raise FleetError for every program name of this fleet another owner holds."""
    if ctx.target.mode == "private":
        return  # the supervisord is this fleet's own
    defined = definitions(ctx)
    problems = []
    for name in sorted(ctx.rendering.programs):
        ours = ctx.program_file(name)
        owners = [p for p in defined.get(name, []) if not (p == ours and is_ours(ctx, p))]
        if owners:
            problems.append(_problem(ctx, name, f"the program name is taken: {_owner(owners[0])}"))
        elif name in loaded and not (ours.exists() and is_ours(ctx, ours)):
            problems.append(
                _problem(
                    ctx,
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


def _problem(ctx: Context, name: str, message: str) -> Problem:
    field = f"agents.{name}" if name in ctx.fleet.agents else "server"
    return Problem(str(ctx.fleet.path), None, name, field, message)
