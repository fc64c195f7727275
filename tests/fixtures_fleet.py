"""Fixtures for fleet tests: filled in by the fleet core."""

from __future__ import annotations
