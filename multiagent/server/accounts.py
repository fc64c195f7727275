"""Clients, refresh tokens, restricted queues and the secrets store, on the server's SQLite.

Upstream's model: a client has a secret (stored hashed), a role (admin > manager >
contributor > agent), `max_priority` and `max_reservation_time` maps (`{queue or "*": n}`)
and `allowed_queues` (the restricted queues it may use). Access tokens carry those
permissions; refresh tokens are stored by digest, expire and can be revoked.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from multiagent.server import tokens
from multiagent.server.db import Store

ADMIN, MANAGER, CONTRIBUTOR, AGENT = "admin", "manager", "contributor", "agent"
ROLES = (ADMIN, MANAGER, CONTRIBUTOR, AGENT)  # highest first
RANK = {role: len(ROLES) - i for i, role in enumerate(ROLES)}
PROTECTED_CLIENT = "testflinger-admin"  # upstream: never changed through the API
PERMISSION_KEYS = ("role", "max_priority", "max_reservation_time", "allowed_queues", "email")
SECRET_PATH = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
DEFAULT_SECRET_LIFETIME = 31536000  # upstream's `expire_after` default: a year


def role_of(doc: dict[str, Any]) -> str:
    role = doc.get("role")
    return role if role in ROLES else CONTRIBUTOR


class Accounts:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- signing key ------------------------------------------------------------------
    def signing_key(self) -> bytes:
        """$JWT_SIGNING_KEY (upstream's name) or a random key kept in the database."""
        env = os.environ.get("JWT_SIGNING_KEY")
        if env:
            return env.encode()
        conn = self.store.conn()
        row = conn.execute("SELECT value FROM settings WHERE name = 'jwt_key'").fetchone()
        if row is None:
            with self.store.write() as wconn:
                wconn.execute(
                    "INSERT OR IGNORE INTO settings(name, value) VALUES ('jwt_key', ?)",
                    (os.urandom(32).hex(),),
                )
            row = conn.execute("SELECT value FROM settings WHERE name = 'jwt_key'").fetchone()
        return bytes.fromhex(row["value"])

    # -- clients ----------------------------------------------------------------------
    def has_clients(self) -> bool:
        return self.store.conn().execute("SELECT 1 FROM clients LIMIT 1").fetchone() is not None

    def get(self, client_id: str) -> dict[str, Any] | None:
        row = (
            self.store.conn()
            .execute("SELECT * FROM clients WHERE client_id = ?", (client_id,))
            .fetchone()
        )
        if row is None:
            return None
        return {"client_id": row["client_id"], **json.loads(row["doc"])}

    def all(self) -> list[dict[str, Any]]:
        rows = self.store.conn().execute("SELECT * FROM clients ORDER BY client_id").fetchall()
        return [{"client_id": row["client_id"], **json.loads(row["doc"])} for row in rows]

    def save(self, client_id: str, doc: dict[str, Any], secret: str | None = None) -> bool:
        """Create or merge a client; True when it was created."""
        with self.store.write() as conn:
            row = conn.execute(
                "SELECT doc, secret_hash FROM clients WHERE client_id = ?", (client_id,)
            ).fetchone()
            merged = (json.loads(row["doc"]) if row else {}) | {
                k: v for k, v in doc.items() if k in PERMISSION_KEYS
            }
            secret_hash = tokens.hash_secret(secret) if secret else (row and row["secret_hash"])
            conn.execute(
                "INSERT INTO clients(client_id, secret_hash, doc) VALUES (?, ?, ?) "
                "ON CONFLICT(client_id) DO UPDATE SET secret_hash = excluded.secret_hash, "
                "doc = excluded.doc",
                (client_id, secret_hash, json.dumps(merged)),
            )
        return row is None

    def delete(self, client_id: str) -> bool:
        """Remove a client and revoke its refresh tokens (upstream leaves them behind)."""
        with self.store.write() as conn:
            gone = conn.execute("DELETE FROM clients WHERE client_id = ?", (client_id,)).rowcount
            conn.execute("UPDATE refresh_tokens SET revoked = 1 WHERE client_id = ?", (client_id,))
        return bool(gone)

    def authenticate(self, client_id: str, secret: str) -> dict[str, Any] | None:
        row = (
            self.store.conn()
            .execute("SELECT * FROM clients WHERE client_id = ?", (client_id,))
            .fetchone()
        )
        if row is None or not tokens.check_secret(secret, row["secret_hash"]):
            return None
        return {"client_id": row["client_id"], **json.loads(row["doc"])}

    @staticmethod
    def permissions(client: dict[str, Any]) -> dict[str, Any]:
        """What an access token carries: upstream's claim set, never the secret's hash."""
        out: dict[str, Any] = {"client_id": client["client_id"], "role": role_of(client)}
        for key in ("max_priority", "max_reservation_time", "allowed_queues", "email"):
            if key in client:
                out[key] = client[key]
        return out

    def access_token(self, client: dict[str, Any]) -> str:
        return tokens.encode_access_token(
            self.permissions(client), self.signing_key(), self.store.clock()
        )

    # -- refresh tokens ---------------------------------------------------------------
    def mint_refresh(self, client_id: str, lifetime: float = tokens.REFRESH_LIFETIME) -> str:
        token = tokens.new_refresh_token()
        now = self.store.clock()
        with self.store.write() as conn:
            conn.execute(
                "INSERT INTO refresh_tokens(digest, client_id, created_at, expires_at, "
                "last_accessed) VALUES (?, ?, ?, ?, ?)",
                (tokens.token_digest(token), client_id, now, now + lifetime, now),
            )
        return token

    def use_refresh(self, token: str) -> tuple[dict[str, Any] | None, str]:
        """(client, "") for a good token, else (None, upstream's 400 message)."""
        now = self.store.clock()
        with self.store.write() as conn:
            row = conn.execute(
                "SELECT * FROM refresh_tokens WHERE digest = ?", (tokens.token_digest(token),)
            ).fetchone()
            if row is None:
                return None, "Invalid refresh token."
            if row["revoked"]:
                return None, "Refresh token revoked."
            if row["expires_at"] < now:
                return None, "Refresh token expired"
            conn.execute(
                "UPDATE refresh_tokens SET last_accessed = ? WHERE digest = ?",
                (now, row["digest"]),
            )
        client = self.get(row["client_id"])
        return (client, "") if client else (None, "Invalid refresh token.")

    def refresh_valid_for(self, token: str, client_id: str) -> float:
        """Seconds this refresh token of `client_id` stays usable (0 if it is not)."""
        row = (
            self.store.conn()
            .execute(
                "SELECT * FROM refresh_tokens WHERE digest = ? AND client_id = ? AND revoked = 0",
                (tokens.token_digest(token), client_id),
            )
            .fetchone()
        )
        return max(0.0, row["expires_at"] - self.store.clock()) if row else 0.0

    def revoke(self, token: str) -> str:
        """'' when revoked, else upstream's 400 message."""
        with self.store.write() as conn:
            row = conn.execute(
                "SELECT revoked FROM refresh_tokens WHERE digest = ?",
                (tokens.token_digest(token),),
            ).fetchone()
            if row is None:
                return "Refresh token not found"
            if row["revoked"]:
                return "Refresh token has already been revoked"
            conn.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE digest = ?",
                (tokens.token_digest(token),),
            )
        return ""

    def revoke_client(self, client_id: str) -> int:
        with self.store.write() as conn:
            return conn.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE client_id = ? AND revoked = 0",
                (client_id,),
            ).rowcount

    # -- restricted queues ------------------------------------------------------------
    def restricted(self) -> set[str]:
        rows = self.store.conn().execute("SELECT name FROM restricted_queues").fetchall()
        return {row["name"] for row in rows}

    def owners(self) -> dict[str, list[str]]:
        """Every restricted queue with the clients allowed to use it."""
        out: dict[str, list[str]] = {name: [] for name in sorted(self.restricted())}
        for client in self.all():
            for queue in client.get("allowed_queues") or []:
                if queue in out:
                    out[queue].append(client["client_id"])
        return out

    def restrict(self, queue: str, client_id: str) -> None:
        client = self.get(client_id) or {"client_id": client_id}
        allowed = list(client.get("allowed_queues") or [])
        if queue not in allowed:
            allowed.append(queue)
        with self.store.write() as conn:
            conn.execute("INSERT OR IGNORE INTO restricted_queues(name) VALUES (?)", (queue,))
        self.save(client_id, {"allowed_queues": allowed})

    def unrestrict(self, queue: str, client_id: str) -> None:
        with self.store.write() as conn:
            conn.execute("DELETE FROM restricted_queues WHERE name = ?", (queue,))
        client = self.get(client_id)
        if client and queue in (client.get("allowed_queues") or []):
            allowed = [q for q in client["allowed_queues"] if q != queue]
            self.save(client_id, {"allowed_queues": allowed})

    # -- secrets ----------------------------------------------------------------------
    def put_secret(
        self, client_id: str, path: str, value: str, expire_after: int | None, ephemeral: bool
    ) -> str | None:
        """Store (overwrite) a secret; returns its expiry as ISO text with µs, or None."""
        now = self.store.clock()
        expires = None if ephemeral or expire_after is None else now + expire_after
        with self.store.write() as conn:
            conn.execute(
                "INSERT INTO secrets(client_id, path, value, expires_at, ephemeral) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(client_id, path) DO UPDATE SET "
                "value = excluded.value, expires_at = excluded.expires_at, "
                "ephemeral = excluded.ephemeral",
                (client_id, path, value, expires, int(ephemeral)),
            )
        if expires is None:
            return None
        from datetime import datetime, timezone

        return datetime.fromtimestamp(expires, timezone.utc).isoformat(timespec="microseconds")

    def delete_secret(self, client_id: str, path: str) -> None:
        with self.store.write() as conn:
            conn.execute("DELETE FROM secrets WHERE client_id = ? AND path = ?", (client_id, path))

    def missing_secrets(self, client_id: str, paths: list[str]) -> list[str]:
        now = self.store.clock()
        missing = []
        for path in paths:
            row = (
                self.store.conn()
                .execute(
                    "SELECT 1 FROM secrets WHERE client_id = ? AND path = ? "
                    "AND (expires_at IS NULL OR expires_at >= ?)",
                    (client_id, path, now),
                )
                .fetchone()
            )
            if row is None:
                missing.append(path)
        return missing

    def resolve_secrets(self, client_id: str | None, wanted: dict[str, str]) -> dict[str, str]:
        """{NAME: value} for the agent; an inaccessible secret is "", an ephemeral one is
        deleted by this read (upstream's hand-out rule)."""
        now = self.store.clock()
        out: dict[str, str] = {}
        with self.store.write() as conn:
            for name, path in wanted.items():
                row = conn.execute(
                    "SELECT value, ephemeral FROM secrets WHERE client_id = ? AND path = ? "
                    "AND (expires_at IS NULL OR expires_at >= ?)",
                    (client_id, path, now),
                ).fetchone()
                out[name] = row["value"] if row else ""
                if row and row["ephemeral"]:
                    conn.execute(
                        "DELETE FROM secrets WHERE client_id = ? AND path = ?", (client_id, path)
                    )
        return out

    def sweep(self) -> int:
        with self.store.write() as conn:
            n = conn.execute(
                "DELETE FROM secrets WHERE expires_at IS NOT NULL AND expires_at < ?",
                (self.store.clock(),),
            ).rowcount
            n += conn.execute(
                "DELETE FROM refresh_tokens WHERE last_accessed < ? OR expires_at < ?",
                (self.store.clock() - 90 * 86400, self.store.clock() - 86400),
            ).rowcount
        return n
