"""Just-in-time provisioning: link the upstream identity to a user, then bring the LMS in line.

Exactly one user per (connection, subject), however many logins race: a lock in
the shared store serialises them, and the database's unique constraint on the
link is the backstop if the lock ever expires mid-way.

Two steps, in this order, both under the lock:

1. The bridge's own record (one database transaction): link, create or update
   the user, refuse an admin block.
2. The LMS, through its adapter: find the account by the user's external id,
   create it only if it is not there, update changed fields, suspend or
   reinstate, and apply the rules' groups and courses. Transient failures are
   retried a bounded number of times; what still fails leaves the user without
   `lms_account_id`, and the next login completes the job. Because the account
   is always looked up by the user's stable external id before any create, a
   create whose answer was lost never becomes a second account.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import Database
from .errors import AccountBlocked
from .identity import Identity
from .lms.base import (
    COURSES,
    GROUPS,
    SUSPEND,
    AccountProfile,
    LmsAccount,
    LmsAdapter,
    LmsError,
    LmsMembershipHeld,
    LmsRejected,
    LmsTargetMissing,
    LmsUnavailable,
    lms_deadline,
)
from .logs import get_logger
from .models import IdentityLink, LmsGrant, User, utcnow
from .rules import Desired, evaluate, facts
from .settings import RuleSettings
from .state import Store

# Transient LMS failures: tried this many times in all, waiting 0.2 s, then 0.4 s.
LMS_ATTEMPTS = 3
LMS_BACKOFF = 0.2
# All LMS work of one login must end within this budget: no attempt starts after it, and
# every HTTP call of an adapter has its timeouts cut to what is left (lms.base.
# call_timeout). The lock outlives it by a wide margin, so two logins of one person never
# provision at the same time.
LMS_BUDGET = 40.0
LOCK_TTL = int(LMS_BUDGET) + 150
LOCK_WAIT = 15.0

log = get_logger("sso_bridge.provisioning")

T = TypeVar("T")


@dataclass(frozen=True)
class Provisioned:
    """What a login did to the user and in the LMS, for the audit event and the session."""

    user_id: int
    public_id: str
    created: bool
    changed: tuple[str, ...]
    lms_actions: tuple[str, ...] = field(default_factory=tuple)
    account: LmsAccount | None = None
    lms_calls: tuple[dict[str, object], ...] = field(default_factory=tuple)
    link_id: int | None = None

    def record_login(self, session: Session) -> None:
        """Note this completed login on the user and the link (``last_login_at``).

        Run in the transaction that writes the login's audit event: a returning person's
        login then costs one write transaction, and a refused login is not a login.
        """
        now = utcnow()
        # This session holds no objects to keep in step with the UPDATEs.
        plain = {"synchronize_session": False}
        session.execute(
            update(User).where(User.id == self.user_id).values(last_login_at=now),
            execution_options=plain,
        )
        if self.link_id is not None:
            session.execute(
                update(IdentityLink)
                .where(IdentityLink.id == self.link_id)
                .values(last_login_at=now),
                execution_options=plain,
            )


@dataclass(frozen=True)
class _Record:
    user_id: int
    link_id: int
    public_id: str
    created: bool
    changed: tuple[str, ...]
    profile: AccountProfile
    facts: dict[str, object]
    lms_account_id: str | None
    """Set while the LMS has this profile; cleared by a change until the LMS takes it."""
    grants: dict[str, frozenset[str]]
    """What the bridge granted in the LMS, by kind (group, course, suspension)."""
    blocked_reason: str | None = None

    @property
    def synced(self) -> bool:
        return self.lms_account_id is not None


@dataclass
class _LmsJob:
    """One login's LMS work: its time budget, and every call's outcome for the audit event.

    Per login, never on the shared Provisioner: threads of one worker provision
    different people at once, and one login's budget must not move another's.
    """

    sleep: Callable[[float], None]
    deadline: float
    calls: list[dict[str, object]] = field(default_factory=list)

    def run(self, what: str, call: Callable[[], T]) -> T:
        """Run an LMS call, retrying transient failures a bounded number of times."""
        for attempt in range(1, LMS_ATTEMPTS + 1):
            if time.monotonic() > self.deadline:
                self.calls.append(
                    {"call": what, "outcome": "budget_spent", "attempts": attempt - 1}
                )
                raise LmsUnavailable("the provisioning time budget is spent")
            try:
                with lms_deadline(self.deadline):
                    result = call()
            except LmsUnavailable as exc:
                if attempt == LMS_ATTEMPTS:
                    self.calls.append({"call": what, "outcome": exc.code, "attempts": attempt})
                    raise
                self.sleep(LMS_BACKOFF * 2 ** (attempt - 1))
            except LmsError as exc:
                self.calls.append({"call": what, "outcome": exc.code, "attempts": attempt})
                raise
            else:
                self.calls.append({"call": what, "outcome": "ok", "attempts": attempt})
                return result
        raise AssertionError("unreachable")


class Provisioner:
    def __init__(
        self,
        db: Database,
        store: Store,
        lms: LmsAdapter,
        rules: Sequence[RuleSettings] = (),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = db
        self._store = store
        self._lms = lms
        self._rules = list(rules)
        self._sleep = sleep

    def provision(self, identity: Identity) -> Provisioned:
        """Create or update the person here and in the LMS, or raise AccountBlocked."""
        subject_hash = hashlib.sha256(identity.subject.encode()).hexdigest()[:32]
        with self._store.lock(
            f"provision:{identity.connection}:{subject_hash}", LOCK_TTL, LOCK_WAIT
        ):
            try:
                record = self._record(identity)
            except IntegrityError:
                # Another instance created the link between our read and our insert
                # (only possible if the lock expired): the link now exists, so retrying
                # takes the update path.
                record = self._record(identity)
            active = identity.active and record.blocked_reason is None
            job = _LmsJob(self._sleep, time.monotonic() + LMS_BUDGET)
            account: LmsAccount | None = None
            actions: list[str] = []
            try:
                account, actions = self._bring_lms_in_line(job, record, active)
            except LmsError as exc:
                # The refusal's audit event says which call failed, and how often it
                # was tried.
                exc.context.update(user_id=record.user_id, lms_calls=job.calls)
                if active:
                    raise
                # A leaver (or blocked person) is refused as such even while the LMS is
                # down; the suspension is attempted again at their next login.
                log.warning("lms_suspend_failed", user_id=record.user_id, reason=exc.code)
        if record.blocked_reason is not None:
            raise AccountBlocked(record.blocked_reason, user_id=record.user_id, lms_calls=job.calls)
        if not identity.active:
            raise AccountBlocked(
                f"employment_status {identity.employment_status!r} is not active",
                user_id=record.user_id,
                lms_calls=job.calls,
            )
        return Provisioned(
            user_id=record.user_id,
            public_id=record.public_id,
            created=record.created,
            changed=record.changed,
            lms_actions=tuple(actions),
            account=account,
            lms_calls=tuple(job.calls),
            link_id=record.link_id,
        )

    # -- step 1: the bridge's own record ---------------------------------------------------

    def _record(self, identity: Identity) -> _Record:
        with self._db.session() as session:
            # The link and its user in one query (a lazy `link.user` would be a second).
            found = session.execute(
                select(IdentityLink, User)
                .join(User, IdentityLink.user_id == User.id)
                .where(
                    IdentityLink.connection == identity.connection,
                    IdentityLink.subject == identity.subject,
                )
            ).one_or_none()
            grants: dict[str, frozenset[str]] = {}
            if found is None:
                if not identity.active:
                    # A leaver who never had an account gets none.
                    raise AccountBlocked(
                        f"employment_status {identity.employment_status!r} is not active"
                    )
                user = User(**identity.profile())
                session.add(user)
                session.flush()
                link = IdentityLink(
                    connection=identity.connection, subject=identity.subject, user_id=user.id
                )
                session.add(link)
                session.flush()
                created, changed = True, tuple[str, ...]()
            else:
                link, user = found
                # Read before anything changes, so the query does not first flush the
                # changes below (one write at commit); under the person's lock only this
                # login changes their grants.
                grants = _grants_by_kind(session, user.id)
                # A person blocked by an administrator is frozen: nothing upstream changes
                # their record until the block is lifted.
                created = False
                changed = () if user.blocked else _apply(user, identity)
            if changed:
                # Not in sync until the LMS has the change: a failed update is retried at
                # the next login, even though the bridge's own record is already new.
                user.lms_account_id = None
            return _Record(
                user.id,
                link.id,
                user.public_id,
                created,
                changed,
                account_profile(user, identity.subject),
                facts(identity.profile(), identity.connection),
                lms_account_id=user.lms_account_id,
                grants=grants,
                # An admin block is applied in the LMS too (suspended), then refused.
                blocked_reason=f"blocked by an administrator: {user.blocked_reason}"
                if user.blocked
                else None,
            )

    # -- step 2: the LMS ----------------------------------------------------------------------

    def _bring_lms_in_line(
        self, job: _LmsJob, record: _Record, active: bool
    ) -> tuple[LmsAccount | None, list[str]]:
        lms = self._lms
        actions: list[str] = []
        account = job.run("find", partial(lms.find, record.public_id))
        if account is None:
            if not active:
                return None, actions
            # Looked up again on every attempt: a create whose answer was lost (timeout)
            # did happen, and must be found rather than made twice.
            account = job.run("create", partial(self._find_or_create, record))
            actions.append("account created")
        elif record.changed or not record.synced:
            job.run("update", partial(lms.update, account, record.profile))
            actions.append("account updated: " + ", ".join(record.changed or ("resync",)))
        if SUSPEND in lms.capabilities:
            actions += self._suspension(job, record, account, active)
        if active:
            desired = evaluate(self._rules, record.facts)
            actions += self._memberships(job, record, account, desired)
        if record.lms_account_id != account.account_id:
            with self._db.session() as session:
                user = session.get(User, record.user_id)
                if user is not None:
                    user.lms_account_id = account.account_id
        return account, actions

    def plan(self, user_id: int, values: dict[str, object]) -> tuple[Desired, list[str]]:
        """What the rules would do for this user now, without doing it (rules explain)."""
        desired = evaluate(self._rules, values)
        with self._db.session() as session:
            public_id = session.scalar(select(User.public_id).where(User.id == user_id))
            grants = _grants_by_kind(session, user_id)
        account = self._lms.find(public_id) if public_id else None
        if account is None:
            return desired, ["no LMS account yet: it would be created at the next login"]
        changes = []
        for kind, wanted, present, capability in (
            ("group", desired.groups, account.groups, GROUPS),
            ("course", desired.courses, account.courses, COURSES),
        ):
            if capability not in self._lms.capabilities:
                continue
            granted = grants.get(kind, frozenset())
            changes += [f"{kind} would be added: {n}" for n in sorted(wanted - present)]
            changes += [
                f"{kind} would be removed: {n}" for n in sorted((granted - wanted) & present)
            ]
            kept = sorted((present - wanted) - granted)
            changes += [f"{kind} kept (not granted by the bridge): {n}" for n in kept]
        return desired, changes or ["no change"]

    def _find_or_create(self, record: _Record) -> LmsAccount:
        """Found again before creating; and after a refused create, found once more: the
        refusal may be the LMS saying the account (made by a create whose answer was lost,
        or by a racer) already exists."""
        found = self._lms.find(record.public_id)
        if found is not None:
            return found
        try:
            return self._lms.create(record.profile)
        except LmsRejected:
            found = self._lms.find(record.public_id)
            if found is None:
                raise
            return found

    def _suspension(
        self, job: _LmsJob, record: _Record, account: LmsAccount, active: bool
    ) -> list[str]:
        """Suspend a leaver; reinstate only a suspension the bridge itself made.

        An LMS admin's suspension is theirs: the bridge never lifts it.
        """
        user_id = record.user_id
        ours = "bridge" in record.grants.get("suspension", frozenset())
        if not active and not account.suspended:
            self._record_grant(user_id, "suspension", "bridge")
            try:
                job.run("suspend", partial(self._lms.set_suspended, account, True))
            except LmsRejected:
                # Not suspended by the bridge, so a later suspension by an admin stays theirs.
                self._forget_grants(user_id, "suspension", {"bridge"})
                raise
            return ["account suspended"]
        if active and account.suspended and ours:
            job.run("reinstate", partial(self._lms.set_suspended, account, False))
            self._forget_grants(user_id, "suspension", {"bridge"})
            return ["account reinstated"]
        if active and account.suspended:
            raise AccountBlocked("suspended in the LMS by an administrator", user_id=user_id)
        return []

    def _memberships(
        self, job: _LmsJob, record: _Record, account: LmsAccount, desired: Desired
    ) -> list[str]:
        user_id = record.user_id
        lms = self._lms
        actions = []
        Membership = Callable[[LmsAccount, str], None]
        kinds: list[tuple[str, frozenset[str], frozenset[str], Membership, Membership]] = []
        if GROUPS in lms.capabilities:
            kinds.append(
                ("group", desired.groups, account.groups, lms.add_to_group, lms.remove_from_group)
            )
        if COURSES in lms.capabilities:
            kinds.append(("course", desired.courses, account.courses, lms.enrol, lms.unenrol))
        for kind, wanted, present, add, remove in kinds:
            granted = record.grants.get(kind, frozenset())
            for name in sorted(wanted - present):
                # Recorded first: if the add happens but the process dies before it is
                # noted, the membership would otherwise never be taken away again.
                self._record_grant(user_id, kind, name)
                try:
                    job.run(f"add {kind} {name}", partial(add, account, name))
                except LmsTargetMissing as exc:
                    # A rule names a group or course the LMS does not have: a mistake in
                    # the configuration (`sso-bridge check` names it). Refusing the login
                    # would lock out everyone the rule matches, so the rest is set up and
                    # the audit event says what was skipped.
                    self._forget_grants(user_id, kind, {name})
                    log.warning("lms_target_missing", kind=kind, name=name, detail=exc.detail)
                    actions.append(f"{kind} skipped, not in the LMS: {name}")
                    continue
                except LmsMembershipHeld:
                    # An LMS admin suspended it: theirs, so not the bridge's grant either
                    # (it is never taken away when the rule stops granting it).
                    self._forget_grants(user_id, kind, {name})
                    actions.append(f"{kind} left as an LMS admin set it: {name}")
                    continue
                except LmsRejected:
                    # Refused for good: nothing was added, so nothing is the bridge's. (A
                    # transient failure keeps the record: the add may have happened.)
                    self._forget_grants(user_id, kind, {name})
                    raise
                actions.append(f"{kind} added: {name}")
            # Only what the bridge granted comes off: an LMS admin's own memberships stay.
            for name in sorted((granted - wanted) & present):
                job.run(f"remove {kind} {name}", partial(remove, account, name))
                actions.append(f"{kind} removed: {name}")
            stale = granted - wanted
            if stale:
                self._forget_grants(user_id, kind, stale)
        return actions

    def _record_grant(self, user_id: int, kind: str, name: str) -> None:
        try:
            with self._db.session() as session:
                session.add(LmsGrant(user_id=user_id, kind=kind, name=name))
        except IntegrityError:
            pass  # already recorded by an earlier, interrupted login

    def _forget_grants(self, user_id: int, kind: str, names: AbstractSet[str]) -> None:
        with self._db.session() as session:
            session.execute(
                delete(LmsGrant).where(
                    LmsGrant.user_id == user_id, LmsGrant.kind == kind, LmsGrant.name.in_(names)
                )
            )


def account_profile(user: User, employee_number: str) -> AccountProfile:
    """The LMS account as the bridge wants it, from the user's stored fields."""
    username = (user.email or f"{user.public_id}").lower()
    return AccountProfile(
        external_id=user.public_id,
        username=username,
        email=user.email,
        given_name=user.given_name,
        family_name=user.family_name,
        display_name=user.display_name,
        department=user.department,
        location=user.location,
        language=user.language,
        job_title=user.job_title,
        employee_number=employee_number,
        manager=user.manager,
    )


def _apply(user: User, identity: Identity) -> tuple[str, ...]:
    """Copy changed profile fields onto ``user``; return the names of those that changed."""
    changed = []
    for name, value in identity.profile().items():
        if getattr(user, name) != value:
            setattr(user, name, value)
            changed.append(name)
    if changed:
        user.updated_at = utcnow()
    return tuple(changed)


def _grants_by_kind(session: Session, user_id: int) -> dict[str, frozenset[str]]:
    grants: dict[str, set[str]] = {}
    for kind, name in session.execute(
        select(LmsGrant.kind, LmsGrant.name).where(LmsGrant.user_id == user_id)
    ):
        grants.setdefault(kind, set()).add(name)
    return {kind: frozenset(names) for kind, names in grants.items()}
