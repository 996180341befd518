"""POST /token/<id>: the signed-token handoff from a homegrown portal."""

from __future__ import annotations

from flask import Blueprint, request
from werkzeug.wrappers import Response

from ..errors import MethodNotAllowed, UnknownConnection
from .complete import begin_login, check_next, finish_login
from .context import services

bp = Blueprint("token", __name__)


@bp.route("/token/<connection_id>", methods=["GET", "POST"])
def token_login(connection_id: str) -> Response:
    settings = services().settings.connections.get(connection_id)
    connector = services().connectors.get(connection_id)
    if settings is None or settings.type != "token" or connector is None:
        raise UnknownConnection(f"no token connection {connection_id!r}")
    begin_login(connection_id)
    if request.method == "GET" and not settings.allow_get:
        # A token in a URL ends up in browser history, Referer headers and proxy logs.
        raise MethodNotAllowed("GET is not enabled for this connection")
    data = request.form if request.method == "POST" else request.args
    requested_next = data.get("next")
    # Refuse a bad deep link before the token is verified, so it does not burn the jti.
    if requested_next:
        check_next(requested_next)
    verified = connector.complete({"token": data.get("token", "")})
    return finish_login(verified, requested_next)
