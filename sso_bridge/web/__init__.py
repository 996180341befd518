"""The web layer: the only code that touches Flask's request."""

from __future__ import annotations

import uuid

import structlog
from flask import Flask, Response, g, request

from . import errors, login, oidc, ops, saml, token
from .context import services

PUBLIC_DOCUMENTS = frozenset({"/.well-known/openid-configuration", "/oauth2/jwks"})


def register(app: Flask) -> None:
    """Attach the bridge's routes, error handling and response headers to ``app``."""
    from .provider import init_provider

    app.before_request(_start_request)
    app.after_request(_security_headers)
    errors.register(app)
    app.register_blueprint(ops.bp)
    app.register_blueprint(login.bp)
    app.register_blueprint(token.bp)
    app.register_blueprint(saml.bp)
    app.register_blueprint(oidc.bp)
    init_provider(app)


def _start_request() -> None:
    # Our own id, not one from a request header: the id on the error page must be one
    # the bridge issued, so an admin can trust it when searching the audit log.
    g.correlation_id = uuid.uuid4().hex[:16]
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(correlation_id=g.correlation_id)


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers["X-Correlation-ID"] = g.get("correlation_id", "-")
    headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    )
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    # Codes and deep links travel in URLs: never leak them to another site via Referer.
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.path in PUBLIC_DOCUMENTS:
        # Discovery and JWKS are public and change rarely: let the LMS cache them briefly
        # (a rotated-in key is published before it signs anything; provider_keys.py).
        headers["Cache-Control"] = "public, max-age=300"
    elif not request.path.startswith("/static/"):
        headers["Cache-Control"] = "no-store"
    if services().settings.secure_cookies:
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return response
