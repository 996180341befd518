"""How provisioning behaves when the LMS fails, races or disagrees (from a review).

`ScriptedLms` is an in-memory LMS whose calls can be made to fail; it stands in for
any adapter, so these cases do not depend on one LMS's API.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sso_bridge.db import Database
from sso_bridge.errors import AccountBlocked
from sso_bridge.identity import Identity
from sso_bridge.lms.base import (
    COURSES,
    GROUPS,
    SUSPEND,
    AccountProfile,
    LmsAccount,
    LmsRejected,
    LmsUnavailable,
)
from sso_bridge.models import User
from sso_bridge.provisioning import Provisioner
from sso_bridge.settings import RuleSettings
from sso_bridge.state import MemoryStore

ADA = Identity(
    connection="acme",
    subject="E1",
    email="ada@example.com",
    given_name="Ada",
    family_name="L",
    department="Engineering",
    employment_status="active",
)
RULES = [
    RuleSettings(name="engineers", when={"department": ["Engineering"]}, groups=["cohort-eng"])
]


class ScriptedLms:
    name = "scripted"
    capabilities = frozenset({GROUPS, COURSES, SUSPEND})

    def __init__(self, unique_username: bool = False) -> None:
        self.accounts: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, list[Exception]] = {}
        self.unique_username = unique_username
        self.lock = threading.Lock()

    def _maybe_fail(self, op: str) -> None:
        if self.fail.get(op):
            raise self.fail[op].pop(0)

    def find(self, external_id: str) -> LmsAccount | None:
        self._maybe_fail("find")
        for aid, a in self.accounts.items():
            if a["external_id"] == external_id:
                return LmsAccount(aid, external_id, a["suspended"], frozenset(a["groups"]))
        return None

    def create(self, profile: AccountProfile) -> LmsAccount:
        self._maybe_fail("create")
        with self.lock:
            if self.unique_username and any(
                a["username"] == profile.username for a in self.accounts.values()
            ):
                raise LmsRejected("username taken")
            aid = str(len(self.accounts) + 1)
            self.accounts[aid] = {
                "external_id": profile.external_id,
                "username": profile.username,
                "department": profile.department,
                "suspended": False,
                "groups": set(),
            }
        return LmsAccount(aid, profile.external_id)

    def update(self, account: LmsAccount, profile: AccountProfile) -> None:
        self._maybe_fail("update")
        self.accounts[account.account_id]["department"] = profile.department

    def set_suspended(self, account: LmsAccount, suspended: bool) -> None:
        self._maybe_fail("set_suspended")
        self.accounts[account.account_id]["suspended"] = suspended

    def add_to_group(self, account: LmsAccount, group: str) -> None:
        self._maybe_fail("add_to_group")
        self.accounts[account.account_id]["groups"].add(group)

    def remove_from_group(self, account: LmsAccount, group: str) -> None:
        self._maybe_fail("remove_from_group")
        self.accounts[account.account_id]["groups"].discard(group)

    def enrol(self, account: LmsAccount, course: str) -> None:
        return None

    def unenrol(self, account: LmsAccount, course: str) -> None:
        return None

    def login_url(self, account: LmsAccount, target: str) -> str | None:
        return None


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path}/p.db")
    database.upgrade()
    return database


def provisioner(db: Database, lms: ScriptedLms, rules: Any = ()) -> Provisioner:
    return Provisioner(db, MemoryStore(), lms, rules, sleep=lambda _: None)


def only(lms: ScriptedLms) -> dict[str, Any]:
    assert len(lms.accounts) == 1
    return next(iter(lms.accounts.values()))


def test_a_failed_update_is_retried_at_the_next_login(db: Database) -> None:
    lms = ScriptedLms()
    provisioner(db, lms).provision(ADA)
    lms.fail["update"] = [LmsUnavailable("down")] * 3
    with pytest.raises(LmsUnavailable):
        provisioner(db, lms).provision(replace(ADA, department="Sales"))
    provisioner(db, lms).provision(replace(ADA, department="Sales"))  # no change upstream now
    assert only(lms)["department"] == "Sales"


def test_a_membership_added_but_not_noted_is_still_removed_later(db: Database) -> None:
    lms = ScriptedLms()
    rules = provisioner(db, lms, RULES)
    rules.provision(ADA)
    assert only(lms)["groups"] == {"cohort-eng"}
    rules.provision(replace(ADA, department="Sales"))
    assert only(lms)["groups"] == set()


def test_a_refused_create_finds_the_account_a_lost_answer_made(db: Database) -> None:
    lms = ScriptedLms()

    class LostAnswer(ScriptedLms):
        pass

    real_create = lms.create

    def create_then_refuse(profile: AccountProfile) -> LmsAccount:
        real_create(profile)  # the LMS made it...
        raise LmsRejected("user already exists")  # ...and then said no

    lms.create = create_then_refuse  # type: ignore[method-assign]
    provisioner(db, lms).provision(ADA)
    assert len(lms.accounts) == 1


def test_the_same_email_for_two_people_is_a_clear_refusal(db: Database) -> None:
    lms = ScriptedLms(unique_username=True)
    provisioner(db, lms).provision(ADA)
    with pytest.raises(LmsRejected) as info:
        provisioner(db, lms).provision(replace(ADA, subject="E2"))
    assert "contact your IT team" in info.value.public_message


def test_an_admins_suspension_is_not_lifted_by_a_login(db: Database) -> None:
    lms = ScriptedLms()
    provisioner(db, lms).provision(ADA)
    only(lms)["suspended"] = True  # an LMS admin suspends Ada
    with pytest.raises(AccountBlocked):
        provisioner(db, lms).provision(ADA)
    assert only(lms)["suspended"] is True


def test_the_bridges_own_suspension_is_lifted_when_the_person_returns(db: Database) -> None:
    lms = ScriptedLms()
    provisioner(db, lms).provision(ADA)
    with pytest.raises(AccountBlocked):
        provisioner(db, lms).provision(replace(ADA, employment_status="leaver", active=False))
    assert only(lms)["suspended"] is True
    provisioner(db, lms).provision(ADA)
    assert only(lms)["suspended"] is False


def test_a_leaver_is_refused_as_such_while_the_lms_is_down(db: Database) -> None:
    lms = ScriptedLms()
    provisioner(db, lms).provision(ADA)
    lms.fail["find"] = [LmsUnavailable("down")] * 3
    with pytest.raises(AccountBlocked):
        provisioner(db, lms).provision(replace(ADA, employment_status="leaver", active=False))


def test_an_admin_block_suspends_the_lms_account(db: Database) -> None:
    lms = ScriptedLms()
    done = provisioner(db, lms).provision(ADA)
    with db.session() as session:
        user = session.get(User, done.user_id)
        assert user is not None
        user.blocked, user.blocked_reason = True, "security review"
    with pytest.raises(AccountBlocked, match="security review"):
        provisioner(db, lms).provision(ADA)
    assert only(lms)["suspended"] is True
