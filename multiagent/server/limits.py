"""Bounds on what a request may carry: body size per endpoint, JSON depth, integer range,
string length. Anything past a bound is refused (413 for a body, 400 otherwise) before it
reaches a schema, SQLite or the json module's recursion.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields, replace
from typing import Any

KIB = 1024
MIB = 1024 * KIB
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # SQLite's INTEGER
_UNITS = {"": 1, "k": KIB, "m": MIB, "g": 1024 * MIB}


@dataclass(frozen=True)
class Limits:
    """Every bound, configurable with `tf-fleet server --limit NAME=VALUE`."""

    body_bytes: int = 1 * MIB  # any body not named below
    job_bytes: int = 1 * MIB  # POST /v1/job
    result_bytes: int = 16 * MIB  # POST /v1/result/<id> (upstream answers 413 from 16 MiB)
    log_bytes: int = 8 * MIB  # one log fragment
    agent_bytes: int = 64 * KIB  # POST /v1/agents/data/<agent>
    artifact_bytes: int = 256 * MIB
    attachments_bytes: int = 256 * MIB
    depth: int = 32  # nesting of JSON arrays and objects
    text_chars: int = 4096  # a string in agent data, a query value
    name_chars: int = 256  # a name in the URL: agent, queue, client, secret path

    def body_limit(self, endpoint: str | None) -> int:
        name = _BODY_LIMITS.get(endpoint or "", "body_bytes")
        return int(getattr(self, name))

    def with_settings(self, settings: list[str]) -> Limits:
        """`NAME=VALUE` pairs (VALUE may end in K, M or G) over these limits."""
        known = {f.name for f in fields(self)}
        changes: dict[str, int] = {}
        for item in settings:
            name, _, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown limit {name!r}; one of {', '.join(sorted(known))}")
            changes[name] = parse_size(value)
        return replace(self, **changes)


_BODY_LIMITS = {
    "api.job_post": "job_bytes",
    "api.result_post": "result_bytes",
    "api.log_post": "log_bytes",
    "api.agent_post": "agent_bytes",
    "api.artifact_post": "artifact_bytes",
    "api.attachments_post": "attachments_bytes",
}


BODY_ENDPOINTS = tuple(_BODY_LIMITS)


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)i?[bB]?\s*", text)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"not a positive size: {text!r} (e.g. 4096, 64K, 16M, 1G)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


class BadInput(Exception):
    """A request past a bound: `status` 400 or 413."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def json_depth(raw: bytes, limit: int) -> int:
    """The nesting depth of a JSON text, counted without parsing it (strings skipped);
    stops as soon as it passes `limit`, so no input can make the parser recurse deep."""
    depth = deepest = 0
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise BadInput(f"{name} is not a JSON number")


def check_value(value: Any, *, max_chars: int) -> None:
    """Integers within SQLite's 64 bits, strings (and keys) of at most `max_chars`."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise BadInput("An integer is out of range (64-bit signed).")
        elif isinstance(item, str):
            if len(item) > max_chars:
                raise BadInput(f"A string is longer than {max_chars} characters.")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def parse_json(raw: bytes, limits: Limits, *, max_chars: int) -> Any:
    """Parse a JSON body within the limits; ValueError for text that is not JSON."""
    if json_depth(raw, limits.depth) > limits.depth:
        raise BadInput(f"JSON nested deeper than {limits.depth} levels.")
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:  # pragma: no cover - the depth scan comes first
        raise BadInput(f"JSON nested deeper than {limits.depth} levels.") from None
    check_value(value, max_chars=max_chars)
    return value
