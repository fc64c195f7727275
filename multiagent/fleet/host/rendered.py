"""The record of the last rendering `up` wrote (`supervisor/rendered.json`), so that a
no-change `up` or `plan` need not render again.

Rendering is a pure function of the fleet, the host facts of its RenderContext, tf-fleet's
code and templates, and the libraries that format the text. The record keeps a digest of
all of those (the key) and the digest of every file that rendering gave. When the key is
the same and every file on disk still has its recorded digest, the files on disk are
exactly what rendering would give, so they are the rendering; any difference (a changed
fleet file, an upgrade, a file edited or removed by hand) renders again, as before.

`render_or_reuse` gives the rendering either way, and says which way it came.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from multiagent import jsonio
from multiagent.fleet.host.files import PRIVATE, read_text, write_atomic
from multiagent.fleet.model.fleetfile import Fleet, FleetError, Problem
from multiagent.fleet.model.layout import Layout
from multiagent.fleet.model.render import Program, RenderContext, Rendering, render
from multiagent.fleet.supervisord.client import SupervisorTarget

VERSION = 1  # of the record's shape


def digest(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()


def record_file(layout: Layout) -> Path:
    return layout.supervisor_dir / "rendered.json"


@cache
def code_digest() -> str:
    """Every source file and template of tf-fleet, the Python that runs it and the versions
    of the libraries that write the text: an upgrade of any of them renders again. (The
    whole package, not a list of the modules rendering uses, so a new import cannot be
    missed; reading it costs a few milliseconds.)"""
    from multiagent.fleet.model.templating import template_dir

    package = Path(__file__).resolve().parents[2]  # multiagent/
    hasher = hashlib.sha256(sys.version.encode())
    sources = [(str(p.relative_to(package)), p) for p in sorted(package.rglob("*.py"))]
    if not sources:  # run from a zip or from bytecode alone: no code to digest, never reuse
        return os.urandom(16).hex()
    templates = [(p.name, p) for p in sorted(template_dir().glob("*.j2"))]
    for name, path in sources + templates:
        hasher.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for library in ("jinja2", "yaml"):
        hasher.update(_library_version(library).encode() + b"\0")
    return hasher.hexdigest()


def _library_version(name: str) -> str:
    """The text of the library's __init__.py (which carries its __version__), found
    without importing it: importing Jinja2 is what a reused rendering saves."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return f"{name}: none"
    try:
        return Path(spec.origin).read_text(errors="replace")
    except OSError:
        return f"{name}: unreadable"


def inputs_key(fleet: Fleet, ctx: RenderContext, code: str) -> str:
    """The digest of everything rendering depends on. The reprs of the frozen dataclasses
    hold every field; one that does not repr the same in every run (a set, an object
    without a repr) only makes every run render, as before. The fleet file's path is made
    absolute: `-c fleet.yaml` and `-c ./fleet.yaml` are the same inputs."""
    fleet = replace(fleet, path=fleet.path.absolute())
    return hashlib.sha256(f"{VERSION}\0{code}\0{fleet!r}\0{ctx!r}".encode()).hexdigest()


def record_of(rendering: Rendering, key: str) -> dict[str, Any]:
    """What to keep of a rendering: its key, and each program's files with their digests
    (the program entry first), in the rendering's order."""
    conf = rendering.supervisord_conf
    return {
        "version": VERSION,
        "key": key,
        "supervisord_conf": [str(conf[0]), digest(conf[1])] if conf else None,
        "programs": [
            [name, [[str(path), digest(text)] for path, text in program.files.items()]]
            for name, program in rendering.programs.items()
        ],
    }


def rendering_digest(rendering: Rendering) -> str:
    """One digest of every agent's files as `rendering` gives them: the same change
    renders the same digest, whatever tf-fleet's own code or the supervisord config."""
    hasher = hashlib.sha256()
    for name, program in sorted(rendering.programs.items()):
        for path, text in sorted(program.files.items()):
            hasher.update(f"{name}\0{path}\0{digest(text)}\0".encode())
    return hasher.hexdigest()


def rendering_from(record: Any, key: str, read: Callable[[Path], str | None]) -> Rendering | None:
    """The rendering the record stands for, with the texts `read` finds on disk, if the
    key is the same and every file has its recorded digest; else None (render again)."""
    if not isinstance(record, dict) or record.get("version") != VERSION:
        return None
    if record.get("key") != key:
        return None
    try:
        conf = None
        if record["supervisord_conf"] is not None:
            conf = _as_read(record["supervisord_conf"], read)
            if conf is None:
                return None
        programs: dict[str, Program] = {}
        for name, entries in record["programs"]:
            files = [_as_read(entry, read) for entry in entries]
            if not files or any(f is None for f in files):
                return None
            (program_path, program_text), *config = [f for f in files if f is not None]
            programs[name] = Program(name, program_path, program_text, dict(config))
    except (KeyError, TypeError, ValueError):
        return None  # not a record this code wrote
    return Rendering(conf, programs)


def _as_read(entry: Any, read: Callable[[Path], str | None]) -> tuple[Path, str] | None:
    """(path, text on disk) when the file has the recorded digest, else None."""
    path_text, recorded = entry
    path = Path(path_text)
    text = read(path)
    if text is None or digest(text) != recorded:
        return None
    return path, text


def reuse(layout: Layout, key: str) -> Rendering | None:
    """The files on disk as the rendering, when the record says they are it."""
    try:
        text = read_text(record_file(layout))  # never through a planted link
        record = jsonio.loads(text) if text is not None else None
    except (OSError, ValueError):
        return None  # unreadable or not JSON: render
    return rendering_from(record, key, read_text)


def remember(layout: Layout, rendering: Rendering, key: str) -> None:
    """Keep the record of a fresh rendering. 0600: the digests are of files that hold
    secrets. Written whatever `up` then wrote: a file left unwritten (a canary's wait, a
    stray's program) differs from its digest, and the next run renders again."""
    text = jsonio.formatted(record_of(rendering, key), indent=0) + "\n"
    if read_text(record_file(layout)) != text:
        write_atomic(record_file(layout), text, PRIVATE)


@dataclass(frozen=True)
class Rendered:
    """The rendering of a fleet now, and how it was had."""

    rendering: Rendering
    key: str  # the digest of rendering's inputs, for `remember`
    # The files on disk are the rendering (their texts were just read): nothing to
    # remember, and nothing to read again.
    reused: bool


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


def render_or_reuse(fleet: Fleet, target: SupervisorTarget) -> Rendered:
    """The files on disk when the record of the last rendering says they are what
    rendering gives (a no-change `up` needs no Jinja2); else rendered now."""
    host = RenderContext(
        python=stable_python(),
        program_dir=target.program_dir,
        program_suffix=target.program_suffix,
    )
    layout = Layout(fleet.state_dir)
    key = inputs_key(fleet, host, code_digest())
    reused = reuse(layout, key)
    if reused is not None:
        return Rendered(reused, key, reused=True)
    try:
        rendering = render(fleet, host)
    except ValueError as exc:
        problem = Problem(str(fleet.path), None, None, "(render)", str(exc))
        raise FleetError([problem]) from exc
    return Rendered(rendering, key, reused=False)
