"""Agent names: what a name may be, and which two names may not share a host.

A name becomes a supervisord program, file and directory names, the restart file and a
URL path; two names may not claim one of those, even through a case-insensitive view or
the restart file tf-agent also obeys without dashes (as upstream's agent does).
"""

from __future__ import annotations

import re
from typing import Any

from multiagent.fleet.model.schema import Report
from multiagent.vocabulary import RESTART_FILE_PREFIX

AGENT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
AGENT_NAME_RULE = (
    "an agent name must be 1-64 letters, digits, '.', '_' or '-',"
    " starting with a letter or digit (it becomes a file and program name)"
)
SERVER_PROGRAM = "tf-fleet-server"  # the embedded server's program: no agent's name


def check_name(name: Any, report: Report) -> bool:
    """True for a name an agent may have; else the reason is reported."""
    path = ("agents", name)
    if not isinstance(name, str) or not AGENT_NAME_RE.fullmatch(name):
        report.add(path, AGENT_NAME_RULE, str(name))
        return False
    if name_keys(name) & name_keys(SERVER_PROGRAM):
        report.add(path, f"{name!r} is reserved for the embedded server", name)
        return False
    return True


def name_keys(name: str) -> set[str]:
    """What an agent's name claims on the host, compared case-insensitively: its program,
    files and directories (the name), and the restart files tf-agent obeys (the name,
    and the name without dashes)."""
    lowered = name.lower()
    return {lowered, lowered.replace("-", "")}


def check_collisions(names: list[str], report: Report) -> None:
    """Two agents whose names claim the same program, restart file or directory."""
    owner: dict[str, str] = {}
    for name in names:
        if not AGENT_NAME_RE.fullmatch(name):
            continue
        clash = sorted({owner[k] for k in name_keys(name) if k in owner})
        for other in clash:
            report.add(("agents", name), _collision(name, other), name)
        for key in name_keys(name):
            owner.setdefault(key, name)


def _collision(name: str, other: str) -> str:
    if name.lower() == other.lower():
        return (
            f"differs from agent {other!r} only by case: the two would share a supervisord"
            " program and directories on a case-insensitive view; rename one"
        )
    shared = (name_keys(name) & name_keys(other)).pop()
    return (
        f"collides with agent {other!r}: both would obey the restart file"
        f" {RESTART_FILE_PREFIX}{shared} (tf-agent also obeys its name without '-'); rename one"
    )
