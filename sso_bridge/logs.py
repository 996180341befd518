"""Structured logs: one JSON object per line, each carrying the request's correlation id."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

# Keys whose values are credentials or whole sign-in messages: replaced before any
# renderer sees them, so a careless log call cannot leak them.
SECRET_KEYS = re.compile(
    r"(token|secret|password|assertion|samlresponse|samlrequest|code_verifier|^code$|authorization|cookie)",
    re.IGNORECASE,
)


def _redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if key != "event" and SECRET_KEYS.search(key):
            event[key] = "[redacted]"
    return event


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library's logging to stdout in one format."""
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
    handler = logging.StreamHandler(sys.stdout)
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
    # werkzeug's access log prints full query strings, which may hold codes or tokens.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
