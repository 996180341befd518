"""Structured logs: one JSON object per line, each carrying the request's correlation id."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog

# Keys whose values are credentials or whole sign-in messages: replaced before any
# renderer sees them, so a careless log call cannot leak them.
SECRET_KEYS = re.compile(
    r"(token|secret|password|assertion|samlresponse|samlrequest|code_verifier|^code$|authorization|cookie)",
    re.IGNORECASE,
)


# JWS/JWT-shaped strings (three base64url parts): tokens, wherever they appear in a message.
JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")
# Credentials inside a message that another library formatted from a dict ('access_token': '…').
QUOTED_SECRET = re.compile(
    r"""(['"](?:access_token|id_token|refresh_token|code|code_verifier|client_secret|token)['"]"""
    r"""\s*:\s*['"])[^'"]+"""
)


def _redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if key != "event" and SECRET_KEYS.search(key):
            event[key] = "[redacted]"
    message = event.get("event")
    if isinstance(message, str):
        message = JWT_SHAPE.sub("[redacted-jwt]", message)
        event["event"] = QUOTED_SECRET.sub(r"\1[redacted]", message)
    return event


def configure(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging to one stream in one format."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # werkzeug's access log prints full query strings, which may hold codes or tokens, and
    # Authlib and urllib3 print issued tokens and request details at DEBUG: keep those
    # libraries above DEBUG even when the bridge itself is debugged.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    for noisy in ("authlib", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.INFO))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
