"""The one reader of a token file (`--token-file`), for tf-agent, tf-fleet and the server.

A token file holds a refresh token as JSON (`{"refresh_token": ...}`, what upstream's
agent reads and the local server's `agent-token` writes) or a plain token (a server's
shared token). Shared, like `vocabulary`, and as light: tf-agent reads it before its first
poll (JSON through `jsonio`, not the `json` package).
"""

from __future__ import annotations

import os

from multiagent import jsonio


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token the file holds: its JSON's `refresh_token`, else its text, stripped.
    Raises OSError when the file cannot be read, ValueError when it holds no token."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read().strip()
    if text.startswith("{"):
        try:
            data = jsonio.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("refresh_token"), str):
            text = data["refresh_token"].strip()
    if not text:
        raise ValueError(f"token file {path} holds no token")
    return text
