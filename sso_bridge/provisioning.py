"""Just-in-time provisioning: link the upstream identity to a user, create or update, refuse.

Exactly one user per (connection, subject), however many logins race: a lock
in the shared store serialises them, and the database's unique constraint on
the link is the backstop if the lock ever expires mid-way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import Database
from .errors import AccountBlocked
from .identity import Identity
from .lms.base import LmsAdapter
from .models import IdentityLink, User, utcnow
from .state import Store

LOCK_TTL = 30
LOCK_WAIT = 10.0


@dataclass(frozen=True)
class Provisioned:
    """What a login did to the user, for the audit event and the session."""

    user_id: int
    public_id: str
    created: bool
    changed: tuple[str, ...]


class Provisioner:
    def __init__(self, db: Database, store: Store, lms: LmsAdapter) -> None:
        self._db = db
        self._store = store
        self._lms = lms

    def provision(self, identity: Identity) -> Provisioned:
        """Create or update the user behind ``identity``, or raise AccountBlocked."""
        subject_hash = hashlib.sha256(identity.subject.encode()).hexdigest()[:32]
        with self._store.lock(
            f"provision:{identity.connection}:{subject_hash}", LOCK_TTL, LOCK_WAIT
        ):
            try:
                return self._provision(identity)
            except IntegrityError:
                # Another instance created the link between our read and our insert
                # (only possible if the lock expired): the link now exists, so retrying
                # takes the update path.
                return self._provision(identity)

    def _provision(self, identity: Identity) -> Provisioned:
        with self._db.session() as session:
            link = session.scalars(
                select(IdentityLink).where(
                    IdentityLink.connection == identity.connection,
                    IdentityLink.subject == identity.subject,
                )
            ).one_or_none()
            if link is None:
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
                user = link.user
                if user.blocked:
                    raise AccountBlocked(
                        f"blocked by an administrator: {user.blocked_reason}", user_id=user.id
                    )
                created, changed = False, _apply(user, identity)
            if not identity.active:
                # Record the new status and suspend the LMS account, then refuse once the
                # transaction has committed: this is how leavers are blocked.
                self._lms.suspend(user)
                refused_user = user.id
            else:
                refused_user = None
                now = utcnow()
                user.last_login_at = now
                link.last_login_at = now
                # The LMS call happens inside the transaction: if it fails, the user row is
                # rolled back too, so no half-made account is left behind.
                user.lms_account_id = self._lms.ensure_account(user)
                result = Provisioned(user.id, user.public_id, created, changed)
        if refused_user is not None:
            raise AccountBlocked(
                f"employment_status {identity.employment_status!r} is not active",
                user_id=refused_user,
            )
        return result


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


def find_user(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)
