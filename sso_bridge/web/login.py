"""GET /login (start, chooser, home-realm discovery) and GET /logout."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, redirect, render_template, request
from werkzeug.wrappers import Response

from ..connectors.oidc import OidcConnector
from ..connectors.saml import SamlConnector
from ..errors import BridgeError
from ..handoff import handoff_url
from ..logs import get_logger
from .complete import check_next, clear_session_cookie
from .context import absolute_url, current_session, services

bp = Blueprint("login", __name__)
log = get_logger("sso_bridge.web.login")


def _start_url(connection_id: str, requested_next: str | None) -> str | None:
    """Where a login through this connection starts: a token portal's page, or the IdP."""
    connection = services().settings.connections[connection_id]
    if connection.type == "token":
        return connection.portal_url
    query = f"?{urlencode({'next': requested_next})}" if requested_next else ""
    kind = "saml" if connection.type == "saml" else "oidc"
    return absolute_url(f"/{kind}/{connection_id}/login{query}")


@bp.get("/")
def root() -> Response:
    """The bridge has no home page of its own: a visitor wants to sign in."""
    return redirect("/login", 303)


@bp.get("/login")
def login() -> Response | str:
    requested_next = request.args.get("next")
    target = check_next(requested_next)
    if current_session() is not None:
        return redirect(handoff_url(services().settings, target), 303)
    connections = services().settings.connections
    startable = {cid: url for cid in connections if (url := _start_url(cid, requested_next))}
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
    """End the bridge session here, then at the IdP where the connection has single logout."""
    session = current_session()
    idp_logout: str | None = None
    if session is not None:
        services().sessions.end(session.sid)
        log.info("logout", connection=session.connection, user_id=session.user_id)
        connector = services().connectors.get(session.connection)
        try:
            if isinstance(connector, SamlConnector):
                idp_logout = connector.begin_logout(session.protocol)
            elif isinstance(connector, OidcConnector):
                # Back here afterwards: with no session left, /logout shows the page.
                idp_logout = connector.logout_url(session.protocol, absolute_url("/logout"))
        except BridgeError as exc:
            # The bridge session is over whatever the provider's state: say so, clear the
            # cookie, and note that the provider's own session could not be ended.
            log.warning(
                "upstream_logout_unavailable", connection=session.connection, reason=exc.code
            )
    response: Response = (
        redirect(idp_logout, 302) if idp_logout else Response(render_template("logged_out.html"))
    )
    clear_session_cookie(response)
    return response
