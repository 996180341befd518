"""sso-bridge: single sign-on from an HR/ERP portal into a learning platform."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .settings import Settings, load_settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the bridge's WSGI app; without settings, load them from the environment."""
    from . import logs
    from .services import build_services
    from .web import register

    settings = settings or load_settings()
    logs.configure(settings.log.level, settings.log.format)
    app = Flask(__name__)
    # Flask's own session is not used (the bridge's session is server-side, sessions.py);
    # no SECRET_KEY is set, so nothing can silently rely on a default one.
    app.config.update(
        MAX_CONTENT_LENGTH=settings.limits.max_request_bytes,
        MAX_FORM_MEMORY_SIZE=settings.limits.max_request_bytes,
        PREFERRED_URL_SCHEME="https" if settings.secure_cookies else "http",
    )
    if settings.trusted_proxies:
        # Only the client address comes from the proxies' headers; URLs never do (base_url).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    app.extensions["sso_bridge"] = build_services(settings)
    register(app)
    return app
