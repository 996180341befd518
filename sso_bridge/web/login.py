"""GET /login (start, chooser, home-realm discovery) and GET /logout."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request
from werkzeug.wrappers import Response

from ..handoff import handoff_url
from ..logs import get_logger
from .complete import check_next, clear_session_cookie
from .context import current_session, services

bp = Blueprint("login", __name__)
log = get_logger("sso_bridge.web.login")


def _start_url(connection_id: str) -> str | None:
    """Where a login through this connection starts (for a token portal: the portal)."""
    connection = services().settings.connections[connection_id]
    return connection.portal_url


@bp.get("/")
def root() -> Response:
    """The bridge has no home page of its own: a visitor wants to sign in."""
    return redirect("/login", 303)


@bp.get("/login")
def login() -> Response | str:
    target = check_next(request.args.get("next"))
    if current_session() is not None:
        return redirect(handoff_url(services().settings, target), 303)
    connections = services().settings.connections
    startable = {cid: url for cid in connections if (url := _start_url(cid))}
    email = request.args.get("email", "").strip().lower()
    if email and "@" in email:
        domain = email.rsplit("@", 1)[1]
        for cid, connection in connections.items():
            if domain in (d.lower() for d in connection.email_domains) and cid in startable:
                return redirect(startable[cid], 303)
    if len(startable) == 1:
        return redirect(next(iter(startable.values())), 303)
    choices = [
        {"id": cid, "name": connections[cid].display_name or cid, "url": url}
        for cid, url in startable.items()
    ]
    discovery = any(c.email_domains for c in connections.values())
    return render_template(
        "login.html",
        choices=choices,
        discovery=discovery,
        email=email,
        next=request.args.get("next", ""),
    )


@bp.get("/logout")
def logout() -> Response:
    session = current_session()
    if session is not None:
        services().sessions.end(session.sid)
        log.info("logout", connection=session.connection, user_id=session.user_id)
    response = Response(render_template("logged_out.html"))
    clear_session_cookie(response)
    return response
