"""`sso-bridge serve`: gunicorn in front of the app factory."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from .settings import ConfigError, Settings


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from . import create_app

        # Each worker builds its own app (no preload): database pools and Redis
        # connections must not be shared across a fork.
        return create_app(self._settings)


def gunicorn_options(bind: str, workers: int) -> dict[str, Any]:
    """The gunicorn settings `serve` runs with (the benchmarks' baselines reuse them)."""
    return {
        "bind": bind,
        "workers": workers,
        "threads": 4,
        "worker_class": "gthread",
        "accesslog": None,
        "forwarded_allow_ips": "127.0.0.1",
        "limit_request_line": 8190,
        "timeout": 30,
    }


def run(settings: Settings, bind: str, workers: int) -> None:
    check_workers(settings, workers)
    if settings.database.migrate_on_start:
        prepare_database(settings)
    _Gunicorn(settings, gunicorn_options(bind, workers)).run()


def check_workers(settings: Settings, workers: int) -> None:
    """Refuse several workers on the in-process store: they would not share state."""
    if workers > 1 and settings.store.url is None:
        raise ConfigError(
            [
                f"--workers {workers}: without store.url every worker keeps its own login "
                "state and replay cache, so a token replayed to another worker would be "
                "accepted. Set store.url to a Redis server, or run one worker."
            ]
        )


def prepare_database(settings: Settings) -> None:
    """Migrate and sync the provider's clients once, in the master, before workers fork."""
    from .db import Database
    from .provider import sync_clients

    db = Database(settings.database.url, settings.database.pool_size)
    try:
        db.upgrade()
        sync_clients(db, settings)
    finally:
        db.dispose()
