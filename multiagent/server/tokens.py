"""Credentials on the wire and at rest: HS256 access tokens, hashed secrets, refresh tokens.

Standard library only. Access tokens are JWTs shaped as upstream's (`exp`, `iat`,
`sub="access_token"`, `permissions{...}`), so upstream's CLI can read the role from them
and upstream's agent can send them back unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

ACCESS_LIFETIME = 600  # seconds, as upstream
LEEWAY = 5  # seconds of clock skew accepted on `exp`
REFRESH_LIFETIME = 6 * 86400  # upstream: a refresh token lives 6 days
REFRESH_TOKEN_BYTES = 48  # 64 URL-safe characters, upstream's length
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class TokenError(Exception):
    """A bearer token that cannot be used: `status` is 401 (expired) or 403 (forged)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_access_token(permissions: dict[str, Any], key: bytes, now: float) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {
        "exp": int(now) + ACCESS_LIFETIME,
        "iat": int(now),
        "sub": "access_token",
        "permissions": permissions,
    }
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def _parts(parts: list[str]) -> tuple[Any, Any, bytes]:
    if len(parts) != 3:
        raise TokenError(403, "Unable to decode token")
    try:
        return json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1])), _unb64(parts[2])
    except (ValueError, UnicodeDecodeError):
        raise TokenError(403, "Unable to decode token") from None


def decode_access_token(token: str, key: bytes, now: float) -> dict[str, Any]:
    """The token's `permissions`; TokenError with upstream's status and message otherwise."""
    parts = token.split(".")
    header, claims, signature = _parts(parts)
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise TokenError(403, "Unable to decode token")
    expected = hmac.new(key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise TokenError(403, "Invalid Token signature")
    if not isinstance(claims, dict):
        raise TokenError(403, "Unable to decode token")
    for claim in ("exp", "iat", "sub", "permissions"):
        if claim not in claims:
            raise TokenError(403, f"Token missing required claim: {claim}")
    if not isinstance(claims["exp"], int) or not isinstance(claims["permissions"], dict):
        raise TokenError(403, "Unable to decode token")
    if now > claims["exp"] + LEEWAY:
        raise TokenError(401, "Token has expired")
    if isinstance(claims["iat"], int) and claims["iat"] > now + LEEWAY:
        raise TokenError(401, "The token is not yet valid")
    return claims["permissions"]


def hash_secret(secret: str) -> str:
    """scrypt with a random salt, as `scrypt$n$r$p$salt$hash` (hex)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)
    return "scrypt${n}${r}${p}$".format(**_SCRYPT) + f"{salt.hex()}${digest.hex()}"


def check_secret(secret: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(
            secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p)
        )
    except ValueError:
        return False
    return hmac.compare_digest(computed.hex(), digest)


def new_refresh_token() -> str:
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def new_client_secret() -> str:
    return secrets.token_urlsafe(24)


def token_digest(token: str) -> str:
    """Refresh tokens are stored by digest: a copy of the database holds no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()
