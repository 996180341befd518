"""The ephemeral store: login transactions, replay caches, codes, locks, counters.

One interface, two implementations: Redis (shared by every instance) and an
in-process dictionary (the embedded default, for one process only). Every key
has a TTL. Any failure to reach Redis raises ``StoreUnavailable``: callers
never treat "could not check" as "not seen before" (fail closed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import redis

from .errors import ProvisioningBusy, StoreUnavailable
from .logs import get_logger

log = get_logger("sso_bridge.state")


class Store(Protocol):
    """What the bridge needs from a key-value store with expiry."""

    def set(self, key: str, value: str, ttl: int) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any value."""

    def add(self, key: str, value: str, ttl: int) -> bool:
        """Store only if ``key`` is absent; True when this call stored it (atomic)."""

    def get(self, key: str) -> str | None:
        """The value, or None when absent or expired."""

    def pop(self, key: str) -> str | None:
        """Get and delete in one atomic step: a value can be taken only once."""

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    def incr(self, key: str, ttl: int) -> int:
        """Add one to a counter that expires ``ttl`` seconds after its first increment."""

    def lock(self, key: str, ttl: int, wait: float) -> AbstractContextManager[None]:
        """Hold an exclusive lock on ``key``; raise ProvisioningBusy after ``wait`` seconds."""

    def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""


class MemoryStore:
    """The in-process store: correct for one process, useless across several."""

    shared = False

    def __init__(self, prefix: str = "") -> None:
        self._prefix = prefix
        self._data: dict[str, tuple[str, float]] = {}
        self._mutex = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def _live(self, key: str, now: float) -> str | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self._data[key]
            return None
        return item[0]

    def _sweep(self, now: float) -> None:
        # Amortised clean-up so a long-running demo does not grow without bound.
        if len(self._data) > 10_000:
            for key in [k for k, (_, exp) in self._data.items() if exp <= now]:
                del self._data[key]

    def set(self, key: str, value: str, ttl: int) -> None:
        now = time.monotonic()
        with self._mutex:
            self._sweep(now)
            self._data[self._prefix + key] = (value, now + ttl)

    def add(self, key: str, value: str, ttl: int) -> bool:
        now = time.monotonic()
        with self._mutex:
            self._sweep(now)
            if self._live(self._prefix + key, now) is not None:
                return False
            self._data[self._prefix + key] = (value, now + ttl)
            return True

    def get(self, key: str) -> str | None:
        with self._mutex:
            return self._live(self._prefix + key, time.monotonic())

    def pop(self, key: str) -> str | None:
        with self._mutex:
            value = self._live(self._prefix + key, time.monotonic())
            self._data.pop(self._prefix + key, None)
            return value

    def delete(self, key: str) -> None:
        with self._mutex:
            self._data.pop(self._prefix + key, None)

    def incr(self, key: str, ttl: int) -> int:
        now = time.monotonic()
        with self._mutex:
            full = self._prefix + key
            current = self._live(full, now)
            if current is None:
                self._data[full] = ("1", now + ttl)
                return 1
            value = int(current) + 1
            self._data[full] = (str(value), self._data[full][1])
            return value

    @contextmanager
    def lock(self, key: str, ttl: int, wait: float) -> Iterator[None]:
        with self._mutex:
            lock = self._locks.setdefault(self._prefix + key, threading.Lock())
        if not lock.acquire(timeout=wait):
            raise ProvisioningBusy(f"lock {key} held for more than {wait}s")
        try:
            yield
        finally:
            lock.release()

    def ping(self) -> None:
        return None


class RedisStore:
    """The shared store: every instance behind the load balancer sees the same state."""

    shared = True

    def __init__(self, url: str, prefix: str = "sso-bridge:", timeout: float = 2.0) -> None:
        self._prefix = prefix
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            health_check_interval=30,
        )

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            # The message names the failure class only: a Redis URL may carry a password.
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc

    def set(self, key: str, value: str, ttl: int) -> None:
        with self._guard():
            self._redis.set(self._prefix + key, value, ex=ttl)

    def add(self, key: str, value: str, ttl: int) -> bool:
        with self._guard():
            return bool(self._redis.set(self._prefix + key, value, ex=ttl, nx=True))

    def get(self, key: str) -> str | None:
        with self._guard():
            return self._redis.get(self._prefix + key)  # type: ignore[return-value]

    def pop(self, key: str) -> str | None:
        with self._guard():
            return self._redis.getdel(self._prefix + key)  # type: ignore[return-value]

    def delete(self, key: str) -> None:
        with self._guard():
            self._redis.delete(self._prefix + key)

    def incr(self, key: str, ttl: int) -> int:
        full = self._prefix + key
        with self._guard():
            pipe = self._redis.pipeline()
            pipe.incr(full)
            pipe.expire(full, ttl, nx=True)
            value, _ = pipe.execute()
            return int(value)

    @contextmanager
    def lock(self, key: str, ttl: int, wait: float) -> Iterator[None]:
        # A token-guarded lock (redis-py's Lock): only the holder can release it, and the
        # TTL frees it if the holder dies mid-provisioning.
        # Polled every 20 ms (redis-py's default is 100 ms): the one waiting is a person
        # whose second click or tab is held until their first login is provisioned.
        lock = self._redis.lock(
            self._prefix + "lock:" + key, timeout=ttl, sleep=0.02, blocking_timeout=wait
        )
        with self._guard():
            acquired = lock.acquire()
        if not acquired:
            raise ProvisioningBusy(f"lock {key} held for more than {wait}s")
        try:
            yield
        finally:
            with self._guard():
                try:
                    lock.release()
                except redis.exceptions.LockNotOwnedError:
                    # Expired while we worked: the database constraints still hold, but it
                    # means provisioning outlasted its budget; say so.
                    log.warning("lock_expired_while_held", key=key)

    def ping(self) -> None:
        with self._guard():
            self._redis.ping()


def open_store(url: str | None, prefix: str, timeout: float) -> MemoryStore | RedisStore:
    """The Redis store when a URL is configured, else the in-process one."""
    if url:
        return RedisStore(url, prefix, timeout)
    return MemoryStore(prefix)
