"""Optional shared-token auth: with a token, agent and submit endpoints need it.

The local server has one secret (the content of --token-file). An agent's token file is
JSON `{"refresh_token": ...}`; a server token file may be that same JSON, so one file can
serve both sides.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path


def read_token_file(path: str | Path) -> str:
    text = Path(path).read_text().strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("refresh_token"), str):
            text = data["refresh_token"].strip()
    if not text:
        raise ValueError(f"token file {path} is empty")
    return text


def bearer_ok(header: str | None, token: str | None) -> bool:
    """True when no token is configured, or the header carries exactly that token."""
    if token is None:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].strip().encode(), token.encode())
