"""A YAML mapping's keys as data, checked all at once, each problem at its key's line.

A `Section` lists the keys a mapping may hold: each key's rule, its default and, for a
required key, what to say when it is absent. `read_section` checks a mapping against
it and reports every problem (an unknown key with the closest known one, a refused or
missing key, a value its rule refuses) to a `Report`, then carries on, so that an admin
fixes a whole file in one go. A rule takes a value and returns what to keep, or raises
ValueError with the message.

No schema library does this here: cfgv and msgspec stop at the first error, and
pydantic, which does not, costs more to import than this whole reader (`tf-fleet status`
pays it on every run), only to have each of its messages translated back into these.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from multiagent.fleet.model.yamlsource import Located

Rule = Callable[[Any], Any]
Path_ = tuple[Any, ...]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    agent: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        who = f"agent {self.agent!r}, " if self.agent else ""
        return f"{where}: {who}{self.field}: {self.message}"


class Report:
    """Every problem found in one file, each placed at the line of its key path."""

    def __init__(self, file: str, located: Located):
        self.file = file
        self.located = located
        self.problems: list[Problem] = []

    def add(self, path: Path_, message: str, agent: str | None = None) -> None:
        field_name = ".".join(str(p) for p in path) if path else "(file)"
        self.problems.append(
            Problem(self.file, self.located.line(path), agent, field_name, message)
        )

    def unknown(
        self, path: Path_, key: Any, known: tuple[str, ...], agent: str | None = None
    ) -> None:
        import difflib  # only a file with a mistake pays for it

        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.add(path + (key,), f"unknown key{hint}", agent)


@dataclass(frozen=True)
class Key:
    name: str
    rule: Rule
    default: Any = None  # what an absent key, or one whose value is refused, stands for
    required: str | None = None  # the message when the key is absent


@dataclass(frozen=True)
class Section:
    expected: str  # what the mapping is, as in "expected <this>, got a list"
    keys: Mapping[str, Key]
    # Keys a user may well write but must not: key -> why. Never offered as "did you mean".
    refused: Mapping[str, str] = field(default_factory=dict)
    known: tuple[str, ...] = ()  # the keys' names, offered as "did you mean"
    required: tuple[Key, ...] = ()


def section(expected: str, *keys: Key, refused: Mapping[str, str] | None = None) -> Section:
    return Section(
        expected,
        {key.name: key for key in keys},
        dict(refused or {}),
        tuple(key.name for key in keys),
        tuple(key for key in keys if key.required),
    )


class Read(NamedTuple):
    values: dict[str, Any]  # each valid key's value as its rule returned it
    invalid: frozenset[str]  # keys refused, missing though required, or with a bad value


def read_section(
    value: Any,
    schema: Section,
    path: Path_,
    report: Report,
    agent: str | None = None,
    *,
    fill: bool = True,
) -> Read | None:
    """`value` checked against `schema`, or None (reported) when it is not a mapping.
    With `fill`, absent keys take their defaults and required ones are reported; without,
    only the keys present are read (settings that are overlaid before use)."""
    if not isinstance(value, dict):
        report.add(path, f"expected {schema.expected}, got {kind_of(value)}", agent)
        return None
    values: dict[str, Any] = {}
    invalid: set[str] = set()
    for name, item in value.items():
        if name in schema.refused:
            report.add(path + (name,), schema.refused[name], agent)
            invalid.add(name)
        elif name not in schema.keys:
            report.unknown(path, name, schema.known, agent)
        else:
            try:
                values[name] = schema.keys[name].rule(item)
            except ValueError as exc:
                report.add(path + (name,), str(exc), agent)
                invalid.add(name)
    if fill:
        invalid |= require(value, schema, path, report, agent)
        for name, key in schema.keys.items():
            values.setdefault(name, key.default)
    return Read(values, frozenset(invalid))


def require(
    written: Collection[Any], schema: Section, path: Path_, report: Report, agent: str | None = None
) -> set[str]:
    """Report each required key of `schema` that is not among the keys `written` (a key
    written with a bad value is written all the same: it is not missing too)."""
    missing = [key for key in schema.required if key.name not in written]
    for key in missing:
        report.add(path + (key.name,), key.required or "", agent)
    return {key.name for key in missing}


# -- rules -----------------------------------------------------------------------------
def accepts(check: Callable[[Any], str | None]) -> Rule:
    """A rule from a check that returns a message or None (tf-agent's `check_setting`):
    the value is kept as it is."""

    def rule(value: Any) -> Any:
        message = check(value)
        if message:
            raise ValueError(message)
        return value

    return rule


def one_of(*choices: Any) -> Rule:
    wanted = " or ".join(f"`{c}`" for c in choices)

    def rule(value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"expected {wanted}, got {value!r}")
        return value

    return rule


def anything(value: Any) -> Any:
    return value


def kind_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)
