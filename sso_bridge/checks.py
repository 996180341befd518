"""`sso-bridge check`: every problem with a deployment, one line each, before it serves."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from .connectors.token_keys import TokenKeyring
from .db import Database
from .errors import BridgeError
from .settings import Settings
from .state import MemoryStore, open_store


def run_checks(settings: Settings) -> list[dict[str, Any]]:
    results = [{"check": "configuration", "ok": True}]

    def attempt(name: str, probe: Callable[[], object]) -> None:
        try:
            probe()
            results.append({"check": name, "ok": True})
        except BridgeError as exc:
            results.append({"check": name, "ok": False, "problem": f"{exc.code}: {exc.detail}"})
        except Exception as exc:
            results.append({"check": name, "ok": False, "problem": str(exc) or type(exc).__name__})

    def database() -> None:
        db = Database(settings.database.url, settings.database.pool_size)
        try:
            db.ping()
        finally:
            db.dispose()

    def store() -> None:
        url = settings.store.url.get_secret_value() if settings.store.url else None
        open_store(url, settings.store.key_prefix, settings.store.timeout).ping()

    def provider_keys() -> None:
        from .provider_keys import ProviderKeys

        ProviderKeys(settings.provider.signing_key_files)

    attempt("database reachable", database)
    attempt("store reachable", store)
    attempt("provider signing keys", provider_keys)
    for cid, connection in settings.connections.items():
        if connection.type == "token":
            attempt(
                f"connection {cid}: keys", partial(TokenKeyring, cid, connection, MemoryStore())
            )
    return results
