"""Provisioning on SQLite and on a real PostgreSQL: create, update, block, and races."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select

from sso_bridge.db import Database
from sso_bridge.errors import AccountBlocked
from sso_bridge.identity import Identity
from sso_bridge.lms.base import LmsUnavailable
from sso_bridge.lms.builtin import BuiltinLms
from sso_bridge.models import IdentityLink, User
from sso_bridge.provisioning import Provisioner
from sso_bridge.state import MemoryStore, RedisStore

ADA = Identity(
    connection="acme",
    subject="E1001",
    email="ada@example.com",
    given_name="Ada",
    family_name="Lovelace",
    department="Engineering",
    location="London",
    language="en-GB",
    groups=("engineering",),
    employment_status="active",
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/test.db"
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    db = Database(url)
    db.upgrade()
    yield db
    db.dispose()


def count(db: Database, model: Any) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_migrations_create_every_table_and_are_idempotent(database: Database) -> None:
    database.upgrade()
    tables = set(inspect(database.engine).get_table_names())
    assert {"users", "identity_links", "audit_events", "oidc_clients", "alembic_version"} <= tables


def test_sqlite_runs_in_wal_mode_with_normal_sync(tmp_path: Path) -> None:
    # NORMAL (not FULL): no fsync per commit; WAL keeps the database consistent through
    # a crash. Every pooled connection must have it, not just the first.
    db = Database(f"sqlite:///{tmp_path}/pragmas.db")
    try:
        with db.engine.connect() as one, db.engine.connect() as two:
            for conn in (one, two):
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        db.dispose()


def test_create_then_update_changed_fields(database: Database) -> None:
    provisioner = Provisioner(database, MemoryStore(), BuiltinLms(database))
    first = provisioner.provision(ADA)
    assert first.created and first.changed == ()
    moved = provisioner.provision(replace(ADA, department="Research", location="Paris"))
    assert not moved.created
    assert set(moved.changed) == {"department", "location"}
    assert moved.user_id == first.user_id
    same = provisioner.provision(replace(ADA, department="Research", location="Paris"))
    assert same.changed == ()
    with database.session() as session:
        user = session.get(User, first.user_id)
        assert user is not None
        assert (user.department, user.location, user.lms_account_id) == (
            "Research",
            "Paris",
            user.public_id,
        )


def test_links_are_per_connection_never_by_email(database: Database) -> None:
    provisioner = Provisioner(database, MemoryStore(), BuiltinLms(database))
    a = provisioner.provision(ADA)
    # Another IdP claiming the same e-mail is another person until an admin links them.
    b = provisioner.provision(replace(ADA, connection="globex"))
    assert a.user_id != b.user_id


def test_a_leaver_without_an_account_gets_none(database: Database) -> None:
    provisioner = Provisioner(database, MemoryStore(), BuiltinLms(database))
    with pytest.raises(AccountBlocked):
        provisioner.provision(replace(ADA, employment_status="terminated", active=False))
    assert count(database, User) == 0


def test_a_leaver_is_blocked_and_comes_back_when_active(database: Database) -> None:
    provisioner = Provisioner(database, MemoryStore(), BuiltinLms(database))
    created = provisioner.provision(ADA)
    with pytest.raises(AccountBlocked):
        provisioner.provision(replace(ADA, employment_status="terminated", active=False))
    with database.session() as session:
        user = session.get(User, created.user_id)
        assert user is not None and user.employment_status == "terminated"
    assert provisioner.provision(ADA).user_id == created.user_id


def test_an_admin_block_wins_over_the_upstream(database: Database) -> None:
    provisioner = Provisioner(database, MemoryStore(), BuiltinLms(database))
    created = provisioner.provision(ADA)
    with database.session() as session:
        user = session.get(User, created.user_id)
        assert user is not None
        user.blocked, user.blocked_reason = True, "security review"
    with pytest.raises(AccountBlocked):
        provisioner.provision(replace(ADA, department="Sales"))
    with database.session() as session:
        user = session.get(User, created.user_id)
        assert user is not None and user.department == "Engineering"


class FailingLms(BuiltinLms):
    """An LMS that is down: every call times out."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.calls = 0

    def find(self, external_id: str) -> Any:
        self.calls += 1
        raise LmsUnavailable("LMS did not answer")


def test_an_lms_outage_is_retried_then_completed_by_the_next_login(database: Database) -> None:
    waits: list[float] = []
    down = FailingLms(database)
    failing = Provisioner(database, MemoryStore(), down, sleep=waits.append)
    with pytest.raises(LmsUnavailable):
        failing.provision(ADA)
    # Bounded retries with backoff, then a clear failure; the person is known to the
    # bridge but has no LMS account yet.
    assert down.calls == 3 and waits == [0.2, 0.4]
    with database.session() as session:
        user = session.scalars(select(User)).one()
        assert user.lms_account_id is None
    # The retry completes the job, for the same person.
    done = Provisioner(database, MemoryStore(), BuiltinLms(database)).provision(ADA)
    assert count(database, User) == 1
    with database.session() as session:
        assert session.get(User, done.user_id).lms_account_id == done.public_id


def _race(provisioner_for: Any, n: int) -> list[Any]:
    results: list[Any] = []
    barrier = threading.Barrier(n)

    def login() -> None:
        provisioner = provisioner_for()
        barrier.wait()
        try:
            results.append(provisioner.provision(ADA))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=login) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_simultaneous_first_logins_make_one_account(database: Database) -> None:
    store = MemoryStore()
    results = _race(lambda: Provisioner(database, store, BuiltinLms(database)), 8)
    assert all(not isinstance(r, Exception) for r in results), results
    assert len({r.user_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert count(database, User) == 1


def test_simultaneous_first_logins_across_instances_on_redis_and_postgres(
    postgres_server: Any, redis_server: Any
) -> None:
    url = postgres_server.create_database(f"race_{uuid.uuid4().hex[:12]}")
    Database(url).upgrade()
    prefix = f"race-{uuid.uuid4().hex}:"

    def instance() -> Provisioner:
        # Each "instance" has its own engine and its own Redis client, as separate
        # processes behind a load balancer would.
        db = Database(url)
        return Provisioner(db, RedisStore(redis_server.url, prefix), BuiltinLms(db))

    results = _race(instance, 10)
    assert all(not isinstance(r, Exception) for r in results), results
    assert len({r.user_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert count(Database(url), User) == 1


def test_the_database_constraint_holds_without_the_lock(database: Database) -> None:
    class NoLock(MemoryStore):
        def lock(self, key: str, ttl: int, wait: float) -> Any:
            import contextlib

            return contextlib.nullcontext()

    results = _race(lambda: Provisioner(database, NoLock(), BuiltinLms(database)), 8)
    users = {r.user_id for r in results if not isinstance(r, Exception)}
    assert len(users) == 1
    assert count(database, User) == 1
    assert count(database, IdentityLink) == 1
