"""/oidc/<id>/login and /oidc/<id>/callback: OpenID Connect and OAuth2 logins."""

from __future__ import annotations

from flask import Blueprint, redirect, request
from werkzeug.wrappers import Response

from ..connectors.oidc import BROWSER_COOKIE_PREFIX, TRANSACTION_TTL, OidcConnector
from .complete import begin_login, check_next, finish_login
from .context import connector_of, services

bp = Blueprint("oidc", __name__)


def connector(connection_id: str) -> OidcConnector:
    return connector_of(connection_id, OidcConnector)


@bp.get("/oidc/<connection_id>/login")
def login(connection_id: str) -> Response:
    """Start a login at the provider; the deep link is checked now and kept server-side."""
    oidc = connector(connection_id)
    begin_login(connection_id)
    target = check_next(request.args.get("next"))
    start = oidc.begin(target)
    response = redirect(start.url, 302)
    # Binds the login to this browser. Lax is enough: the provider sends the browser back
    # with a top-level GET, which carries Lax cookies.
    response.set_cookie(
        oidc.browser_cookie(start.state),
        start.browser_secret,
        max_age=TRANSACTION_TTL,
        secure=services().settings.secure_cookies,
        httponly=True,
        samesite="Lax",
        path="/",
    )
    return response


@bp.get("/oidc/<connection_id>/callback")
def callback(connection_id: str) -> Response:
    """The provider's answer: code (or error), state and, per RFC 9207, iss."""
    oidc = connector(connection_id)
    begin_login(connection_id)
    binding = {k: v for k, v in request.cookies.items() if BROWSER_COOKIE_PREFIX in k}
    verified = oidc.complete(request.args.to_dict(), cookies=binding)
    response = finish_login(verified, None)
    if verified.request_id is not None:
        response.delete_cookie(
            oidc.browser_cookie(verified.request_id),
            path="/",
            secure=services().settings.secure_cookies,
            httponly=True,
            samesite="Lax",
        )
    return response
