"""/saml/<id>/…: metadata, SP-initiated login, the assertion consumer service, single logout."""

from __future__ import annotations

import secrets

from flask import Blueprint, Response, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from ..connectors.saml import BROWSER_COOKIE_PREFIX, REQUEST_TTL, SamlConnector
from ..logs import get_logger
from .complete import begin_login, check_next, clear_session_cookie, finish_login
from .context import connector_of, current_session, services

bp = Blueprint("saml", __name__)
BINDING_COOKIES = (BROWSER_COOKIE_PREFIX, "__Host-" + BROWSER_COOKIE_PREFIX)
log = get_logger("sso_bridge.web.saml")


def connector(connection_id: str) -> SamlConnector:
    return connector_of(connection_id, SamlConnector)


@bp.get("/saml/<connection_id>/metadata")
def metadata(connection_id: str) -> Response:
    """This SP's metadata, for the IdP admin to import (or to point a metadata URL at)."""
    xml = connector(connection_id).sp_metadata()
    return Response(xml, mimetype="application/samlmetadata+xml")


@bp.get("/saml/<connection_id>/login")
def login(connection_id: str) -> BaseResponse:
    """SP-initiated login: an AuthnRequest by HTTP-Redirect to the IdP."""
    saml = connector(connection_id)
    begin_login(connection_id)
    requested = request.args.get("next")
    target = check_next(requested)
    secret = secrets.token_urlsafe(32) if saml.binds_browser else None
    start = saml.begin(target, secret)
    response = redirect(start.url, 302)
    if secret is not None:
        # SameSite=None: it must come back with the IdP's cross-site POST to the ACS (a
        # Lax cookie would not). It holds nothing but a random value bound to this one
        # request, so sending it cross-site gives nothing away.
        response.set_cookie(
            saml.browser_cookie(start.request_id),
            secret,
            max_age=REQUEST_TTL,
            secure=True,
            httponly=True,
            samesite="None",
            path="/",
        )
    return response


@bp.post("/saml/<connection_id>/acs")
def acs(connection_id: str) -> BaseResponse:
    """The assertion consumer service: SP- and IdP-initiated responses by HTTP-POST.

    This is a cross-site POST from the IdP: browsers do not send SameSite=Lax cookies
    with it, so nothing here relies on the bridge's session cookie. The pending request
    is found by the response's InResponseTo, in the shared store; on https it is also
    bound to the browser that started it, by a SameSite=None cookie.
    """
    begin_login(connection_id)
    saml = connector(connection_id)
    form = request.form.to_dict()
    # A deep link in RelayState is checked before the response is: a refused one must not
    # use up the assertion, so the person can try again with a good link.
    if form.get("RelayState"):
        check_next(form["RelayState"])
    binding = {k: v for k, v in request.cookies.items() if k.startswith(BINDING_COOKIES)}
    verified = saml.complete(form, cookies=binding)
    response = finish_login(verified, None)
    if verified.request_id is not None:
        # Only this request's cookie: other tabs may have logins of their own pending.
        response.delete_cookie(
            saml.browser_cookie(verified.request_id),
            path="/",
            secure=True,
            httponly=True,
            samesite="None",
        )
    return response


@bp.route("/saml/<connection_id>/slo", methods=["GET", "POST"])
def slo(connection_id: str) -> BaseResponse:
    """Single logout: the IdP's LogoutRequest, or its LogoutResponse to ours."""
    saml = connector(connection_id)
    data = request.args if request.method == "GET" else request.form
    session = current_session()
    if "SAMLRequest" in data:
        begin_login(connection_id)
        redirect_url = saml.idp_logout(dict(data), session)
        if session is not None:
            services().sessions.end(session.sid)
        response = redirect(redirect_url, 302)
    else:
        if not saml.logout_finished(dict(data)):
            log.warning("saml_logout_response_not_confirmed", connection=connection_id)
        if session is not None:
            services().sessions.end(session.sid)
        response = Response(render_template("logged_out.html"))
    clear_session_cookie(response)
    return response
