"""LMS adapters, a closed set chosen by `lms.type`."""

from __future__ import annotations

from .base import LmsAdapter
from .builtin import BuiltinLms

ADAPTERS: dict[str, type[BuiltinLms]] = {"builtin": BuiltinLms}


def build_adapter(kind: str) -> LmsAdapter:
    return ADAPTERS[kind]()
