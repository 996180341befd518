"""The common end of every login: identity → provisioning → session → handoff.

Each connector's route calls ``finish_login`` with what the connector verified;
nothing here knows which protocol it came from.
"""

from __future__ import annotations

import time

from flask import g, redirect, request
from werkzeug.wrappers import Response

from .. import metrics
from ..audit import SUCCESS, AuditRecord
from ..connectors.base import Verified
from ..errors import NextNotAllowed, RateLimited
from ..handoff import handoff_url
from ..lms.base import LOGIN_URL, LmsLoginUrlRefused
from ..redirects import safe_next
from .context import correlation_id, current_session, services


def begin_login(connection_id: str | None) -> None:
    """Mark this request as a login (a refusal is audited and counted), and rate-limit it.

    ``connection_id`` is None for a connection that does not exist: still audited, but
    counted under one label, so made-up ids cannot grow the metrics without bound.
    """
    g.login = {"connection": connection_id, "started": time.perf_counter()}
    limit = services().settings.limits.logins_per_minute
    attempts = services().store.incr(f"rate:{connection_id}:{request.remote_addr}", 60)
    if attempts > limit:
        # Only the first refusal of a window is audited: a flood must not become a flood
        # of audit rows. The log still has every one.
        g.login["quiet"] = attempts > limit + 1
        raise RateLimited(f"{attempts} attempts in a minute from {request.remote_addr}")


def check_next(value: str | None) -> str:
    """The absolute LMS URL for a requested deep link (the open-redirect guard)."""
    lms = services().settings.lms
    return safe_next(value, lms.base_url, lms.allowed_hosts)


def finish_login(verified: Verified, requested_next: str | None) -> Response:
    """Provision the person, start a bridge session and send them into the LMS."""
    svc = services()
    identity = verified.identity
    g.login["subject"] = identity.subject
    # A deep link signed by the upstream wins over one from the unsigned form field;
    # both pass the same allow-list before anything is provisioned.
    target = check_next(verified.next or requested_next)
    # A new login ends this browser's earlier session first: if this one is refused after
    # provisioning changed the person's record, no older session may carry on with it.
    previous = current_session()
    if previous is not None:
        svc.sessions.end(previous.sid)
    provisioned = svc.provisioner.provision(identity)
    g.login["user_id"] = provisioned.user_id
    # Into the LMS: its own one-time login URL where the adapter has one (Moodle's
    # auth_userkey), else the standard handoff through the bridge's OpenID Provider.
    # Asked for before any session or audit success, so a failure here is a clean refusal.
    direct = None
    if provisioned.account is not None and LOGIN_URL in svc.lms.capabilities:
        direct = svc.lms.login_url(provisioned.account, target)
        if direct is not None:
            # A one-time login key goes in that URL: only to the LMS, as a deep link would.
            try:
                check_next(direct)
            except NextNotAllowed:
                raise LmsLoginUrlRefused(
                    "the LMS's login URL is not on lms.base_url's host or lms.allowed_hosts"
                ) from None
    session = svc.sessions.create(
        provisioned.user_id,
        provisioned.public_id,
        identity.connection,
        identity.subject,
        verified.session,
    )
    svc.audit.record(
        AuditRecord(
            event="login",
            outcome=SUCCESS,
            reason="created"
            if provisioned.created
            else "updated"
            if provisioned.changed
            else "unchanged",
            correlation_id=correlation_id(),
            connection=identity.connection,
            subject=identity.subject,
            user_id=provisioned.user_id,
            remote_addr=request.remote_addr,
            detail={
                "changed": list(provisioned.changed),
                "lms": list(provisioned.lms_actions),
                "lms_calls": list(provisioned.lms_calls),
            },
        ),
        also=provisioned.record_login,
    )
    metrics.LOGINS.labels(identity.connection, SUCCESS).inc()
    metrics.LOGIN_SECONDS.labels(identity.connection).observe(
        time.perf_counter() - g.login["started"]
    )
    # 303: the browser follows with a GET, never re-posting the token.
    response = redirect(direct or handoff_url(svc.settings, target), 303)
    set_session_cookie(response, session.sid)
    return response


def set_session_cookie(response: Response, sid: str) -> None:
    settings = services().settings
    # SameSite=Lax: the LMS's authorization request reaches the bridge as a top-level GET
    # navigation from another site, which Lax allows; cross-site POSTs and subresource
    # requests never carry the session. No cross-site POST needs this cookie.
    response.set_cookie(
        settings.session_cookie,
        sid,
        max_age=settings.session.lifetime,
        secure=settings.secure_cookies,
        httponly=True,
        samesite="Lax",
        path="/",
    )


def clear_session_cookie(response: Response) -> None:
    settings = services().settings
    response.delete_cookie(
        settings.session_cookie,
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="Lax",
    )
