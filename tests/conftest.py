from __future__ import annotations

# Shared fixtures live in plain modules (tests/ is on sys.path, see pyproject).
pytest_plugins = ["fixtures_server", "fixtures_fleet"]
