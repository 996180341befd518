"""Helpers the routes share: the process's services, absolute URLs, the current session."""

from __future__ import annotations

from typing import TypeVar

from flask import current_app, g, request

from ..errors import UnknownConnection
from ..services import Services
from ..sessions import BridgeSession


def services() -> Services:
    return current_app.extensions["sso_bridge"]  # type: ignore[no-any-return]


T = TypeVar("T")


def connector_of(connection_id: str, kind: type[T]) -> T:
    """The connection's connector if it is of ``kind``; otherwise an unknown connection."""
    found = services().connectors.get(connection_id)
    if not isinstance(found, kind):
        raise UnknownConnection(f"no {kind.__name__} {connection_id[:64]!r}")
    return found


def absolute_url(path: str) -> str:
    """An absolute URL on the bridge, from the configured base URL, never the Host header."""
    return services().settings.base_url + path


def current_session() -> BridgeSession | None:
    """The bridge session of this browser, if any (looked up once per request)."""
    if "bridge_session" not in g:
        cookie = request.cookies.get(services().settings.session_cookie)
        g.bridge_session = services().sessions.get(cookie)
    return g.bridge_session  # type: ignore[no-any-return]


def correlation_id() -> str:
    return g.get("correlation_id", "-")  # type: ignore[no-any-return]
