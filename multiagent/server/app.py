"""Build the Flask application: storage, API, pages."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multiagent.server.db import Store
from multiagent.server.policy import Policy

if TYPE_CHECKING:
    from apiflask import APIFlask


class StripTrailingSlash:
    """Upstream routes use strict_slashes=False: `/v1/job/` must work like `/v1/job`."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]):
        path = environ.get("PATH_INFO", "")
        if len(path) > 1 and path.endswith("/"):
            environ["PATH_INFO"] = path.rstrip("/") or "/"
        return self.wsgi_app(environ, start_response)


def _add_server_timing(app: APIFlask, clock_ns: Callable[[], int]) -> None:
    """`Server-Timing: app;dur=<ms>` on every answer: separates our time from the network's."""
    from flask import g

    @app.before_request
    def _start() -> None:
        g.tf_started_ns = clock_ns()

    @app.after_request
    def _stop(response):
        started = g.get("tf_started_ns")
        if started is not None:
            response.headers["Server-Timing"] = f"app;dur={(clock_ns() - started) / 1e6:.3f}"
        return response


def create_app(
    db_path: str | Path,
    policy: Policy | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> APIFlask:
    from apiflask import APIFlask
    from flask.json.provider import DefaultJSONProvider

    from multiagent.server import SERVER_VERSION, api, api_auth, pages
    from multiagent.server.accounts import Accounts

    # The OpenAPI document names endpoints and fields, never data: it needs no token (the
    # fuzz test reads it). No docs page: it would load its script from a CDN.
    app = APIFlask(
        __name__,
        title="tf-fleet server (Testflinger API v1)",
        version=SERVER_VERSION,
        spec_path="/v1/openapi.json",
        docs_path=None,
    )
    policy = policy or Policy()
    app.config["TF_POLICY"] = policy
    app.config["TF_CLOCK"] = clock
    app.config["MAX_FORM_PARTS"] = 16  # a file upload has one part
    if isinstance(app.json, DefaultJSONProvider):
        app.json.sort_keys = False  # keep documents in the order they were built
    store = Store(db_path, clock=clock, agent_ttl=policy.agent_ttl)
    app.extensions["tf_store"] = store
    app.extensions["tf_accounts"] = Accounts(store)
    app.register_blueprint(api.bp)
    app.register_blueprint(api_auth.bp)
    app.register_blueprint(pages.bp)
    _add_server_timing(app, clock_ns=time.perf_counter_ns)
    app.wsgi_app = StripTrailingSlash(app.wsgi_app)  # type: ignore[method-assign]
    return app
