"""tf-fleet: run a lab host's Testflinger device agents under supervisord."""

from __future__ import annotations

__version__ = "0.1.0"
