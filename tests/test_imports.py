"""The package's import graph, read from the source with `ast`: no module imports itself
back through others (every import counts, also one inside a function or under
`if TYPE_CHECKING:`), tf-agent and the server stand alone, and tf-fleet's floors import
only downwards."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "multiagent"
AGENT = f"{PACKAGE}.agent"
SERVER = f"{PACKAGE}.server"
# Besides itself, tf-agent or the server may import the shared modules at the package's
# top, each as light as tf-agent's start-up needs.
WINGS_MAY_IMPORT = {
    PACKAGE,
    *(f"{PACKAGE}.{m}" for m in ("vocabulary", "jsonio", "tokenfile", "fastexit")),
}


def modules() -> dict[str, Path]:
    """{dotted name: file} of every module of the package; a package is its __init__."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _owner(name: str, known: dict[str, Path]) -> str | None:
    """The module of the package that `name` is, or lives in (an attribute, a class)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules `name` imports, wherever in the file the import is."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(m for a in node.names if (m := _owner(a.name, known)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                # `from pkg import mod` imports the module; `from mod import name`, mod.
                target = _owner(f"{source}.{alias.name}", known) or _owner(source, known)
                if target:
                    found.add(target)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def _reach(edges: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen: set[str] = set()
    todo = list(edges[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges[node])
    return seen


def cycles(edges: dict[str, set[str]]) -> dict[frozenset[str], list[str]]:
    """Each set of modules that import one another (a strongly connected component of
    more than one module), with one path round it that closes on its first module."""
    reach = {node: _reach(edges, node) for node in edges}
    found: dict[frozenset[str], list[str]] = {}
    for node in sorted(edges):
        if node not in reach[node] or any(node in component for component in found):
            continue
        component = frozenset(other for other in reach[node] if node in reach[other])
        found[component] = _closed_path(node, component, edges)
    return found


def _closed_path(start: str, component: frozenset[str], edges: dict[str, set[str]]) -> list[str]:
    """One way round: from `start` through the component and back to it (breadth first,
    so the shortest)."""
    paths = {nxt: [start, nxt] for nxt in sorted(edges[start] & component)}
    frontier = list(paths)
    while frontier and start not in paths:
        ahead = []
        for node in frontier:
            for nxt in sorted(edges[node] & component):
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    ahead.append(nxt)
        frontier = ahead
    return paths[start]


def _cycles_text(found: dict[frozenset[str], list[str]]) -> str:
    lines = []
    for component, path in found.items():
        others = sorted(component - set(path))
        lines.append(" -> ".join(path) + (f" (and {', '.join(others)})" if others else ""))
    return "\n".join(lines)


def test_the_cycle_finder_names_a_cycle_and_nothing_else():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(edges) == {frozenset("abc"): ["a", "b", "c", "a"]}
    assert cycles({"a": {"b"}, "b": set()}) == {}


def test_imports_are_read_wherever_they_are(tmp_path):
    package = tmp_path / "p"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "low.py").write_text("X = 1\n")
    (package / "sub" / "mod.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..low import X\n"
        "def later():\n    from p.sub import other\n"
    )
    (package / "sub" / "other.py").write_text("import p.low\n")
    known = {
        "p": package / "__init__.py",
        "p.sub": package / "sub" / "__init__.py",
        "p.low": package / "low.py",
        "p.sub.mod": package / "sub" / "mod.py",
        "p.sub.other": package / "sub" / "other.py",
    }
    assert imports("p.sub.mod", known["p.sub.mod"], known) == {"p.low", "p.sub.other"}
    assert imports("p.sub.other", known["p.sub.other"], known) == {"p.low"}


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles:\n" + _cycles_text(found)


def _in(wing: str, name: str) -> bool:
    return name == wing or name.startswith(f"{wing}.")


@pytest.mark.parametrize("wing", [AGENT, SERVER])
def test_the_agent_and_the_server_import_nothing_of_the_other_wings(wing):
    wrong = {
        f"{name} imports {target}"
        for name, targets in graph().items()
        if _in(wing, name)
        for target in targets
        if not (_in(wing, target) or target in WINGS_MAY_IMPORT)
    }
    assert not wrong, "\n".join(sorted(wrong))


# tf-fleet's floors, lowest first: a module may import its own floor and those below.
FLEET = f"{PACKAGE}.fleet"
FLEET_FLOORS = ("model", "supervisord", "host", "reconcile", "commands", "cli")
# Leaves every floor may use: the user-facing errors and words, and the server client.
FLEET_LEAVES = ("errors", "messages", "serverinfo", "serverclient")


def _floor(name: str) -> int | None:
    """The floor of a tf-fleet module; None for a leaf or anything outside tf-fleet."""
    parts = name.split(".")
    if parts[:2] != [PACKAGE, "fleet"] or len(parts) < 3 or parts[2] in FLEET_LEAVES:
        return None
    return FLEET_FLOORS.index(parts[2])


def test_fleet_floors_import_only_downwards():
    wrong = sorted(
        f"{name} ({FLEET_FLOORS[low]}) imports {target} ({FLEET_FLOORS[high]})"
        for name, targets in graph().items()
        if (low := _floor(name)) is not None
        for target in targets
        if (high := _floor(target)) is not None and high > low
    )
    assert not wrong, "\n".join(wrong)


def test_every_fleet_module_has_a_floor_or_is_a_leaf():
    homeless = [
        name
        for name in graph()
        if name.startswith(f"{FLEET}.") and name.split(".")[2] not in (*FLEET_FLOORS, *FLEET_LEAVES)
    ]
    assert not homeless, homeless
