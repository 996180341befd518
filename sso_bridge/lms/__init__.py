"""LMS adapters, a closed set chosen by `lms.type`."""

from __future__ import annotations

from ..db import Database
from ..settings import LmsSettings
from .base import LmsAdapter
from .builtin import BuiltinLms


def build_adapter(settings: LmsSettings, db: Database) -> LmsAdapter:
    """The configured adapter (a closed set: `lms.type` is a Literal)."""
    if settings.type == "builtin":
        return BuiltinLms(db)
    raise AssertionError(f"unknown LMS adapter {settings.type!r}")
