from __future__ import annotations

import compileall
from pathlib import Path

import pytest

import multiagent

# Shared fixtures live in plain modules (tests/ is on sys.path, see pyproject).
pytest_plugins = ["fixtures_server", "fixtures_agent", "fixtures_fleet", "fixtures_upstream"]

# Single tests that run for tens of seconds (a whole bench, two hosts' playbooks): they go
# first, one to each worker, so that no worker starts one while the others run out of tests.
LONGEST = {"test_bench_smoke.py", "test_bench_faults_smoke.py"}
# Fixtures that start processes: a fleet under its supervisord, or a server and agents.
FLEET = {"fleet_env"}
PROCESSES = {"tf_server", "shared_server", "make_agent"}


def _rank(item: pytest.Item) -> int:
    names = set(getattr(item, "fixturenames", ()))
    if item.path.name in LONGEST or "lab" in names:
        return 0
    if names & FLEET:
        return 1
    if names & PROCESSES:
        return 2
    return 3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slowest kinds of test first, quick unit tests last (with `-n`, the workers' queues
    then even out at the end); otherwise in collection order."""
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (_rank(item), order[id(item)]))


def pytest_sessionstart(session: pytest.Session) -> None:
    """The package's bytecode, as `pip install .` leaves it. The suite starts hundreds of
    tf-fleet, tf-agent and server processes; with PYTHONDONTWRITEBYTECODE set (or a tree
    they cannot write), each would compile every module it imports again (an editable
    install compiles nothing ahead)."""
    compileall.compile_dir(str(Path(multiagent.__file__).parent), quiet=1)
