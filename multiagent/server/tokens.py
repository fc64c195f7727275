"""Credentials on the wire and at rest: HS256 access tokens, hashed secrets, refresh tokens.

Access tokens are PyJWT's HS256 JWTs, shaped as upstream's (`exp`, `iat`,
`sub="access_token"`, `permissions{...}`), so upstream's CLI can read the role from them
and upstream's agent can send them back unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
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


def encode_access_token(permissions: dict[str, Any], key: bytes, now: float) -> str:
    # Imported here: `tf-fleet up` writes agents' refresh tokens through this module and
    # has no use for PyJWT (nor the cryptography package it loads when present).
    import jwt

    claims = {
        "exp": int(now) + ACCESS_LIFETIME,
        "iat": int(now),
        "sub": "access_token",
        "permissions": permissions,
    }
    return jwt.encode(claims, key, algorithm="HS256")


def decode_access_token(token: str, key: bytes, now: float) -> dict[str, Any]:
    """The token's `permissions`; TokenError with upstream's status and message otherwise."""
    import jwt

    try:
        # Time is checked below against `now`: the server's clock is injectable (tests move
        # it), PyJWT reads the wall clock.
        claims = jwt.decode(
            token,
            key,
            algorithms=["HS256"],
            options={
                "require": ["exp", "iat", "sub", "permissions"],
                "verify_exp": False,
                "verify_iat": False,
            },
        )
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(403, f"Token missing required claim: {exc.claim}") from None
    except jwt.InvalidSignatureError:
        raise TokenError(403, "Invalid Token signature") from None
    except jwt.DecodeError:
        raise TokenError(403, "Unable to decode token") from None
    except jwt.InvalidTokenError:
        raise TokenError(403, "Invalid Token") from None
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


def new_upload_key() -> str:
    """A job's upload credential (its attachments): as strong as a refresh token."""
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def token_digest(token: str) -> str:
    """Refresh tokens are stored by digest: a copy of the database holds no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()
