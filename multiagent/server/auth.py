"""Who is asking, and may they: upstream's role gate over clients, tokens and the shared token.

Three ways to be let in:
* **open** (no client configured and no --token-file): every caller may do everything, as
  the loopback-only server always allowed;
* **the shared token** (--token-file): its content as a bearer (or as a refresh token)
  may do everything, the simplest single-host set-up;
* **clients**: an access token from `/v1/oauth2/token` or `/v1/oauth2/refresh` carries a
  role and limits; a caller without a token is upstream's anonymous contributor (or is
  refused with 401 when the server was started with --require-auth).

With a shared token an anonymous caller reads nothing (401): reads carry job data, output
and agents' state. With clients only, anonymous reads are upstream's (a contributor's);
secret values are never in any read. A browser may send the same credentials
as HTTP Basic (any user name and the shared token, or a client id and its secret).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import TYPE_CHECKING, Any

from multiagent.server.accounts import ADMIN, AGENT, CONTRIBUTOR, MANAGER, Accounts
from multiagent.server.db import HOLDER_SHARED
from multiagent.server.policy import policy
from multiagent.server.tokens import TokenError, decode_access_token

if TYPE_CHECKING:
    from werkzeug.datastructures import Authorization

A, M, C, G = ADMIN, MANAGER, CONTRIBUTOR, AGENT
AMCG = (A, M, C, G)
AMC = (A, M, C)
AMG = (A, M, G)
AM = (A, M)
ONLY_ADMIN = (A,)
ONLY_AGENT = (G,)
READ_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class Principal:
    role: str | None
    client_id: str | None = None
    permissions: dict[str, Any] = field(default_factory=dict)
    everything: bool = False  # open server or shared token: no role or limit applies
    anonymous: bool = False
    # An anonymous caller reads as upstream's contributor, except where a shared token
    # guards the server: then it reads nothing.
    may_read: bool = True

    @property
    def name(self) -> str:
        return self.client_id or ("local operator" if self.everything else "anonymous")

    @property
    def holder(self) -> str | None:
        """Who holds a job this caller pops: its client, the shared token, or nobody (open)."""
        if self.client_id is not None:
            return self.client_id
        return HOLDER_SHARED if self.everything and not self.anonymous else None


OPEN = Principal(role=ADMIN, everything=True, anonymous=True)
SHARED = Principal(role=ADMIN, everything=True)
ANONYMOUS = Principal(role=CONTRIBUTOR, anonymous=True)
ANONYMOUS_NO_READS = Principal(role=CONTRIBUTOR, anonymous=True, may_read=False)


def same_secret(offered: str, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(offered.encode(), token.encode())


class Denied(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def auth_configured(shared: str | None, accounts: Accounts) -> bool:
    return shared is not None or accounts.has_clients()


def basic_principal(auth: Authorization, *, shared: str | None, accounts: Accounts) -> Principal:
    """HTTP Basic from a browser: the shared token as password, or a client's secret."""
    user, password = auth.username or "", auth.password or ""
    if same_secret(password, shared):
        return SHARED
    client = accounts.authenticate(user, password) if user and password else None
    if client is None:
        raise Denied(401, "Invalid client id or client key")
    permissions = accounts.permissions(client)
    return Principal(
        role=permissions["role"], client_id=client["client_id"], permissions=permissions
    )


def identify(
    auth: Authorization | None,
    *,
    offered: bool,
    shared: str | None,
    accounts: Accounts,
    now: float,
    basic: bool = False,
) -> Principal:
    """The caller behind werkzeug's parsed Authorization header (`offered`: a header was
    sent, parsed or not); Denied for a token that cannot be used.
    `basic`: HTTP Basic credentials count too (reads)."""
    if not auth_configured(shared, accounts):
        return OPEN
    if not offered:
        return ANONYMOUS_NO_READS if shared else ANONYMOUS
    if auth is None:
        # werkzeug parses every scheme but Basic with a bad encoding.
        if basic:
            raise Denied(401, "Malformed basic credentials")
        return Principal(role=None)
    if basic and auth.type == "basic":
        return basic_principal(auth, shared=shared, accounts=accounts)
    if auth.type != "bearer" or not auth.token:
        return Principal(role=None)  # upstream: another scheme has no role (403)
    value = auth.token.strip()
    if same_secret(value, shared):
        return SHARED
    try:
        permissions = decode_access_token(value, accounts.signing_key(), now)
    except TokenError as exc:
        raise Denied(exc.status, exc.message) from None
    role = permissions.get("role")
    return Principal(
        role=role if isinstance(role, str) else CONTRIBUTOR,
        client_id=permissions.get("client_id"),
        permissions=permissions,
    )


def allowed(
    principal: Principal, roles: tuple[str, ...], *, require_auth: bool, read: bool = False
) -> None:
    """Raise Denied unless `principal` may call a route open to `roles`. An anonymous
    caller of a server with a shared token reads nothing: `read` routes are 401."""
    if principal.everything:
        return
    no_reads = read and not principal.may_read and CONTRIBUTOR in roles
    if principal.anonymous and (require_auth or no_reads):
        raise Denied(401, "Authentication is required for specified endpoint")
    if principal.role not in roles:
        raise Denied(403, f"Specified action requires role: {', '.join(roles)}")


def gate(roles: tuple[str, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A route decorator: upstream's `require_role`, answered before any body check."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from apiflask import abort
            from flask import g, request

            read = request.method in READ_METHODS
            try:
                principal = caller()
                require = policy().require_auth
                allowed(principal, roles, require_auth=require, read=read)
            except Denied as exc:
                abort(exc.status, exc.message)
            g.tf_principal = principal
            return view(*args, **kwargs)

        return wrapper

    return decorate


def caller() -> Principal:
    from flask import current_app, g, request

    cached = g.get("tf_principal")
    if cached is not None:
        return cached
    principal = identify(
        request.authorization,
        offered=bool(request.headers.get("Authorization")),
        shared=policy().token,
        accounts=current_app.extensions["tf_accounts"],
        now=current_app.config["TF_CLOCK"](),
        basic=request.method in READ_METHODS,
    )
    g.tf_principal = principal
    return principal
