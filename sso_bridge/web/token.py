"""POST /token/<id>: the signed-token handoff from a homegrown portal."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, request
from werkzeug.wrappers import Response

from ..errors import MethodNotAllowed, OriginNotAllowed, UnknownConnection
from ..settings import TokenConnection
from .complete import begin_login, check_next, finish_login
from .context import services

bp = Blueprint("token", __name__)


@bp.route("/token/<connection_id>", methods=["GET", "POST"])
def token_login(connection_id: str) -> Response:
    settings = services().settings.connections.get(connection_id)
    connector = services().connectors.get(connection_id)
    if settings is None or settings.type != "token" or connector is None:
        begin_login(None)
        raise UnknownConnection(f"no token connection {connection_id[:64]!r}")
    begin_login(connection_id)
    if request.method == "GET" and not settings.allow_get:
        # A token in a URL ends up in browser history, Referer headers and proxy logs.
        raise MethodNotAllowed("GET is not enabled for this connection")
    check_origin(request.headers.get("Origin"), settings)
    data = request.form if request.method == "POST" else request.args
    requested_next = data.get("next")
    # Refuse a bad deep link before the token is verified, so it does not burn the jti.
    if requested_next:
        check_next(requested_next)
    verified = connector.complete({"token": data.get("token", "")})
    return finish_login(verified, requested_next)


def check_origin(origin: str | None, settings: TokenConnection) -> None:
    """Refuse a token posted from a page that is not the portal's (login CSRF).

    Without this, anyone holding a valid token of their own could post it from their
    site and sign a visitor into the LMS as themselves. Browsers send Origin on every
    POST; a request without one (a server-side client) has no page to forge from.
    """
    allowed = list(settings.allowed_origins)
    if not allowed and settings.portal_url:
        parts = urlsplit(settings.portal_url)
        allowed = [f"{parts.scheme}://{parts.netloc}"]
    if origin is not None and allowed and origin.lower() not in {o.lower() for o in allowed}:
        raise OriginNotAllowed(f"posted from origin {origin[:100]!r}")
