"""The local Testflinger-compatible server: apiflask (Flask, marshmallow) + SQLite, served
by waitress.

Kept import-light on purpose: the CLI imports this package, and Flask/waitress are only
loaded when a server or app is actually built (see `app.create_app` and `cli`).
"""

from __future__ import annotations

SERVER_VERSION = "1.5.0-local"
