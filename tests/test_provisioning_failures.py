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
from sqlalchemy import select

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
    LmsTargetMissing,
    LmsUnavailable,
)
from sso_bridge.models import LmsGrant, User
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


def grants_of(db: Database, user_id: int) -> set[tuple[str, str]]:
    with db.session() as session:
        rows = session.execute(
            select(LmsGrant.kind, LmsGrant.name).where(LmsGrant.user_id == user_id)
        )
        return {(kind, name) for kind, name in rows}


def test_a_rule_naming_a_group_the_lms_lacks_skips_it_and_lets_the_person_in(
    db: Database,
) -> None:
    class WithoutEngg(ScriptedLms):
        def add_to_group(self, account: LmsAccount, group: str) -> None:
            if group == "cohort-engg":
                raise LmsTargetMissing("no cohort cohort-engg")
            super().add_to_group(account, group)

    lms = WithoutEngg()
    rules = [
        *RULES,
        RuleSettings(name="typo", when={"department": ["Engineering"]}, groups=["cohort-engg"]),
    ]

    done = provisioner(db, lms, rules).provision(ADA)

    assert only(lms)["groups"] == {"cohort-eng"}
    assert "group skipped, not in the LMS: cohort-engg" in done.lms_actions
    assert "group added: cohort-eng" in done.lms_actions
    # No grant is kept for what was never given: nothing to take away later.
    assert grants_of(db, done.user_id) == {("group", "cohort-eng")}
    assert {"call": "add group cohort-engg", "outcome": "lms_target_missing", "attempts": 1} in (
        done.lms_calls
    )


def test_every_lms_call_and_its_attempts_are_reported(db: Database) -> None:
    lms = ScriptedLms()
    lms.fail["find"] = [LmsUnavailable("slow")]

    done = provisioner(db, lms, RULES).provision(ADA)

    assert list(done.lms_calls) == [
        {"call": "find", "outcome": "ok", "attempts": 2},
        {"call": "create", "outcome": "ok", "attempts": 1},
        {"call": "add group cohort-eng", "outcome": "ok", "attempts": 1},
    ]


def test_a_failed_call_is_named_in_the_refusal(db: Database) -> None:
    lms = ScriptedLms()
    lms.fail["create"] = [LmsUnavailable("down")] * 3

    with pytest.raises(LmsUnavailable) as exc:
        provisioner(db, lms).provision(ADA)

    assert exc.value.context["lms_calls"] == [
        {"call": "find", "outcome": "ok", "attempts": 1},
        {"call": "create", "outcome": "lms_unavailable", "attempts": 3},
    ]
    assert exc.value.context["user_id"] is not None


def test_one_logins_time_budget_is_not_moved_by_another_login(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One Provisioner serves every thread of a worker. Ada's LMS work must stop at her own
    # budget even if Grace's login starts (and would set a later deadline) meanwhile.
    clock = [1000.0]
    monkeypatch.setattr("sso_bridge.provisioning.time.monotonic", lambda: clock[0])
    lms = ScriptedLms()
    shared = provisioner(db, lms)
    grace = replace(ADA, subject="E2", email="grace@example.com")

    class SlowLms(ScriptedLms):
        def find(self, external_id: str) -> LmsAccount | None:
            if external_id == ada_public_id[0] and not started_grace[0]:
                started_grace[0] = True
                clock[0] += 30  # Ada's find takes 30 s; Grace logs in meanwhile
                shared.provision(grace)
                clock[0] += 15  # 45 s into Ada's 40 s budget
                raise LmsUnavailable("slow")
            return super().find(external_id)

    ada_public_id = [provisioner(db, lms).provision(ADA).public_id]
    started_grace = [False]
    slow = SlowLms()
    slow.accounts = lms.accounts
    shared = provisioner(db, slow)

    with pytest.raises(LmsUnavailable, match="budget"):
        shared.provision(ADA)


def test_a_refused_add_leaves_no_grant_behind(db: Database) -> None:
    # Else an admin who later adds the membership by hand would see the bridge remove it.
    lms = ScriptedLms()
    lms.fail["add_to_group"] = [LmsRejected("no")]
    with pytest.raises(LmsRejected):
        provisioner(db, lms, RULES).provision(ADA)
    user_id = only_user_id(db)
    assert grants_of(db, user_id) == set()
    lms.fail["add_to_group"] = [LmsUnavailable("slow")] * 3
    with pytest.raises(LmsUnavailable):
        provisioner(db, lms, RULES).provision(ADA)
    # A transient failure keeps the record: the add may have happened after all.
    assert grants_of(db, user_id) == {("group", "cohort-eng")}


def test_a_refused_suspension_is_not_counted_as_the_bridges(db: Database) -> None:
    lms = ScriptedLms()
    provisioner(db, lms).provision(ADA)
    lms.fail["set_suspended"] = [LmsRejected("no")]
    with pytest.raises(AccountBlocked):
        provisioner(db, lms).provision(replace(ADA, employment_status="leaver", active=False))
    assert grants_of(db, only_user_id(db)) == set()
    # An admin suspends the account by hand; the person comes back: the suspension stays.
    only(lms)["suspended"] = True
    with pytest.raises(AccountBlocked, match="administrator"):
        provisioner(db, lms).provision(ADA)
    assert only(lms)["suspended"] is True


def only_user_id(db: Database) -> int:
    with db.session() as session:
        [user_id] = session.scalars(select(User.id)).all()
        return user_id
