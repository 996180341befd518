"""The built-in LMS adapter: accounts live in the bridge's own database.

The LMS reads them through the bridge's OpenID Provider (claims in the ID token
and userinfo): the user row is the account, and groups and courses are rows of
`builtin_memberships`. Suspension is what the provider already enforces for
blocked and inactive people, so there is nothing more to store for it.
"""

from __future__ import annotations

from collections.abc import Set
from typing import ClassVar

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ..db import Database
from ..models import BuiltinMembership, User
from .base import COURSES, GROUPS, SUSPEND, AccountProfile, LmsAccount, LmsRejected


class BuiltinLms:
    name: ClassVar[str] = "builtin"
    capabilities: ClassVar[frozenset[str]] = frozenset({GROUPS, COURSES, SUSPEND})

    def __init__(self, db: Database) -> None:
        self._db = db

    def find(self, external_id: str) -> LmsAccount | None:
        # The account and its memberships in one query (this runs at every login).
        with self._db.session() as session:
            rows = session.execute(
                select(BuiltinMembership.kind, BuiltinMembership.name)
                .select_from(User)
                .outerjoin(BuiltinMembership, BuiltinMembership.user_id == User.id)
                .where(User.public_id == external_id)
            ).all()
        if not rows:
            return None
        return LmsAccount(
            account_id=external_id,
            external_id=external_id,
            groups=frozenset(name for kind, name in rows if kind == "group"),
            courses=frozenset(name for kind, name in rows if kind == "course"),
        )

    def create(self, profile: AccountProfile) -> LmsAccount:
        # The user row is the account: provisioning made it before asking the LMS.
        account = self.find(profile.external_id)
        if account is None:
            raise LmsRejected(f"no user {profile.external_id} to be the account")
        return account

    def update(self, account: LmsAccount, profile: AccountProfile) -> None:
        return None  # the user row already carries the profile

    def set_suspended(self, account: LmsAccount, suspended: bool) -> None:
        return None  # the provider refuses blocked and inactive people

    def add_to_group(self, account: LmsAccount, group: str) -> None:
        self._add(account, "group", group)

    def remove_from_group(self, account: LmsAccount, group: str) -> None:
        self._remove(account, "group", group)

    def enrol(self, account: LmsAccount, course: str) -> None:
        self._add(account, "course", course)

    def unenrol(self, account: LmsAccount, course: str) -> None:
        self._remove(account, "course", course)

    def login_url(self, account: LmsAccount, target: str) -> str | None:
        return None  # the handoff goes through the bridge's OpenID Provider

    def missing_targets(self, groups: Set[str], courses: Set[str]) -> list[str]:
        return []  # groups and courses are names here: any name a rule gives exists

    def _user_id(self, account: LmsAccount) -> int:
        with self._db.session() as session:
            user_id = session.scalar(select(User.id).where(User.public_id == account.account_id))
        if user_id is None:
            raise LmsRejected(f"no account {account.account_id}")
        return user_id

    def _add(self, account: LmsAccount, kind: str, name: str) -> None:
        user_id = self._user_id(account)
        try:
            with self._db.session() as session:
                session.add(BuiltinMembership(user_id=user_id, kind=kind, name=name))
        except IntegrityError:
            pass  # already a member: adding again is a no-op

    def _remove(self, account: LmsAccount, kind: str, name: str) -> None:
        user_id = self._user_id(account)
        with self._db.session() as session:
            session.execute(
                delete(BuiltinMembership).where(
                    BuiltinMembership.user_id == user_id,
                    BuiltinMembership.kind == kind,
                    BuiltinMembership.name == name,
                )
            )
