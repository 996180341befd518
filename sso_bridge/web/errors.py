"""One error handler, one template: a plain-words page with a correlation id.

Every refusal of a login is also audited with its reason code and counted in
the metrics. The browser never sees ``str(exc)``; the detail goes to the audit
log, where the admin can find it by the id on the page.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, g, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .. import metrics
from ..audit import FAILURE, AuditRecord
from ..errors import BridgeError, RequestTooLarge
from ..logs import get_logger
from .context import correlation_id, services

log = get_logger("sso_bridge.web")


def register(app: Flask) -> None:
    app.register_error_handler(BridgeError, _bridge_error)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)


# Paths where every refusal is a refused login, even one raised before a route runs
# (a 405 for PUT, say): those are audited too.
LOGIN_PATHS = ("/token/", "/saml/", "/oidc/")


def _bridge_error(exc: BridgeError) -> tuple[str, int]:
    log.warning("refused", reason=exc.code, detail=exc.detail, status=exc.status)
    _refused_login(exc.code, exc.detail, exc.context)
    return _page(exc.status, exc.public_message, exc.code, exc.public_hint()), exc.status


def _too_large(_exc: RequestEntityTooLarge) -> tuple[str, int]:
    return _bridge_error(RequestTooLarge("request body over the limit"))


def _http_error(exc: HTTPException) -> Any:
    if exc.code is None or exc.code < 400:
        return exc
    code = exc.name.lower().replace(" ", "_")
    _refused_login(code, f"HTTP {exc.code} {request.method}", {})
    return _page(exc.code, exc.description or exc.name, code), exc.code


def _unexpected(exc: Exception) -> tuple[str, int]:
    log.exception("unexpected_error")
    _refused_login("internal_error", f"unexpected {type(exc).__name__}", {})
    message = (
        "Something went wrong on our side. Please try again; if it keeps happening, "
        "tell your IT team and quote the reference below."
    )
    return _page(500, message, "internal_error"), 500


def _refused_login(code: str, detail: str, context: dict[str, Any]) -> None:
    """Audit and count a refusal if this request was a login."""
    login = g.get("login")
    if login is None:
        if not request.path.startswith(LOGIN_PATHS):
            return
        login = {"connection": None}
    metrics.LOGINS.labels(login["connection"] or "unknown", code).inc()
    if login.get("quiet"):
        return
    try:
        services().audit.record(
            AuditRecord(
                event="login",
                outcome=FAILURE,
                reason=code,
                correlation_id=correlation_id(),
                connection=login["connection"],
                subject=login.get("subject"),
                user_id=context.get("user_id") or login.get("user_id"),
                remote_addr=request.remote_addr,
                detail={
                    "message": detail,
                    "path": request.path[:200],
                    **{k: v for k, v in context.items() if k != "user_id"},
                },
            )
        )
    except Exception:
        log.exception("audit_write_failed", reason=code)


def _page(status: int, message: str, code: str, hint: str | None = None) -> str:
    return render_template(
        "error.html",
        status=status,
        message=message,
        code=code,
        hint=hint,
        correlation_id=correlation_id(),
    )
