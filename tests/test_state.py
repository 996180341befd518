"""The ephemeral store: the same behaviour in-process and on a real Redis, and fail-closed."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from sso_bridge.errors import ProvisioningBusy, StoreUnavailable
from sso_bridge.state import MemoryStore, RedisStore


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[MemoryStore | RedisStore]:
    if request.param == "memory":
        yield MemoryStore("test:")
    else:
        server = request.getfixturevalue("redis_server")
        yield RedisStore(server.url, prefix=f"test-{uuid.uuid4().hex}:")


def test_set_get_delete(store: Any) -> None:
    store.set("a", "1", 10)
    assert store.get("a") == "1"
    store.delete("a")
    assert store.get("a") is None


def test_add_is_set_if_absent(store: Any) -> None:
    assert store.add("k", "first", 10) is True
    assert store.add("k", "second", 10) is False
    assert store.get("k") == "first"


def test_pop_takes_a_value_once(store: Any) -> None:
    store.set("code", "v", 10)
    assert store.pop("code") == "v"
    assert store.pop("code") is None


def test_ttl_expires(store: Any) -> None:
    store.set("short", "v", 1)
    assert store.add("short-add", "v", 1)
    time.sleep(1.2)
    assert store.get("short") is None
    assert store.add("short-add", "again", 1) is True


def test_incr_counts_within_a_window(store: Any) -> None:
    assert [store.incr("n", 10) for _ in range(3)] == [1, 2, 3]


def test_concurrent_add_has_exactly_one_winner(store: Any) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def attempt() -> None:
        barrier.wait()
        results.append(store.add("race", "x", 10))

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1


def test_lock_excludes_and_times_out(store: Any) -> None:
    with store.lock("L", ttl=5, wait=0.5):
        failures: list[Exception] = []

        def contender() -> None:
            try:
                with store.lock("L", ttl=5, wait=0.3):
                    pass
            except ProvisioningBusy as exc:
                failures.append(exc)

        thread = threading.Thread(target=contender)
        thread.start()
        thread.join()
        assert len(failures) == 1
    with store.lock("L", ttl=5, wait=0.5):
        pass  # released after the first holder left


def test_redis_down_fails_closed(redis_server: Any) -> None:
    store = RedisStore(redis_server.url, prefix="down:", timeout=0.5)
    store.set("k", "v", 10)
    redis_server.stop()
    try:
        for call in (
            lambda: store.add("jti", "1", 10),
            lambda: store.get("k"),
            lambda: store.pop("k"),
            store.ping,
        ):
            with pytest.raises(StoreUnavailable):
                call()
    finally:
        redis_server.start()
    # It recovers by itself once Redis is back.
    assert store.add("after", "1", 10) is True
