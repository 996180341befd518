"""The LMS adapter interface: the only way provisioning reaches a learning platform.

Adapters never see SAML or OIDC; they get the account as the bridge wants it to
be. Every method must be safe to call again after a failure (a retry completes
the job): `create` is only called after `find` found nothing, and membership
changes of something already in place are no-ops. Adapters raise `LmsError`
subclasses; anything else is a bug.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Set
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from ..errors import BridgeError

# What an adapter can do; `sso-bridge check` reports what a configured one cannot.
GROUPS = "groups"
COURSES = "courses"
SUSPEND = "suspend"
LOGIN_URL = "login_url"


class LmsError(BridgeError):
    """The LMS refused a call or could not be reached."""

    code = "lms_error"
    status = 502
    public_message = (
        "The learning platform did not answer as expected, so your account could not be "
        "set up. Please try again in a moment; nothing was left half-done."
    )


class LmsUnavailable(LmsError):
    """A transient failure (timeout, connection refused, 5xx, 429): worth a retry."""

    code = "lms_unavailable"
    status = 503


class LmsRejected(LmsError):
    """A permanent refusal (4xx other than 429, an unexpected answer): no retry helps."""

    code = "lms_rejected"
    public_message = (
        "The learning platform refused to set up your account (for example, another "
        "account already uses your e-mail address). Please contact your IT team and "
        "quote the reference below."
    )


class LmsLoginUrlRefused(LmsRejected):
    """The LMS answered with a login URL off its own host: a configuration mistake
    (`lms.base_url` is not the LMS's site URL), never a place to send a login key."""

    code = "lms_login_url_refused"
    public_message = (
        "The learning platform is not set up correctly for sign-in, so you were not sent "
        "there. Please contact your IT team and quote the reference below."
    )


class LmsTargetMissing(LmsRejected):
    """A group or course a rule names does not exist in the LMS (and the adapter does not
    create it): a configuration problem, which `sso-bridge check` reports."""

    code = "lms_target_missing"


class LmsMembershipHeld(LmsError):
    """The LMS has this membership in a state an LMS admin set (a suspended enrolment):
    the bridge leaves it as it is, neither reactivating nor claiming it."""

    code = "lms_membership_held"


# The end of the current login's LMS budget (time.monotonic()), set by provisioning for
# each call: adapters shorten their HTTP timeouts to it, so a slow LMS cannot keep one
# call going past the budget (and past the person's provisioning lock).
_deadline: ContextVar[float | None] = ContextVar("lms_deadline", default=None)


@contextmanager
def lms_deadline(at: float) -> Iterator[None]:
    """Within the block, LMS calls end by ``at`` (time.monotonic())."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def call_timeout(timeout: float) -> float:
    """``timeout``, or less if the login's LMS budget ends sooner; LmsUnavailable once spent."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise LmsUnavailable("the provisioning time budget is spent")
    return min(timeout, remaining)


@dataclass(frozen=True)
class AccountProfile:
    """The account as the bridge wants it in the LMS."""

    external_id: str
    """The bridge's stable id for the person (`users.public_id`): the LMS lookup key."""
    username: str
    email: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    display_name: str | None = None
    department: str | None = None
    location: str | None = None
    language: str | None = None
    job_title: str | None = None
    employee_number: str | None = None
    manager: str | None = None


@dataclass(frozen=True)
class LmsAccount:
    """The account as the LMS has it."""

    account_id: str
    external_id: str
    suspended: bool = False
    groups: frozenset[str] = field(default_factory=frozenset)
    courses: frozenset[str] = field(default_factory=frozenset)


class LmsAdapter(Protocol):
    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]]

    def find(self, external_id: str) -> LmsAccount | None:
        """The account with this external id, or None."""

    def create(self, profile: AccountProfile) -> LmsAccount:
        """Create the account (only after `find` found none)."""

    def update(self, account: LmsAccount, profile: AccountProfile) -> None:
        """Bring the account's profile fields to ``profile``."""

    def set_suspended(self, account: LmsAccount, suspended: bool) -> None:
        """Suspend (a leaver) or reinstate the account, keeping its records."""

    def add_to_group(self, account: LmsAccount, group: str) -> None:
        """Add the account to a group or cohort (created if the LMS allows)."""

    def remove_from_group(self, account: LmsAccount, group: str) -> None:
        """Remove the account from a group or cohort."""

    def enrol(self, account: LmsAccount, course: str) -> None:
        """Enrol the account in a course."""

    def unenrol(self, account: LmsAccount, course: str) -> None:
        """Unenrol the account from a course."""

    def login_url(self, account: LmsAccount, target: str) -> str | None:
        """A URL that signs the person in at ``target`` directly, or None to use the
        bridge's OpenID Provider handoff."""

    def missing_targets(self, groups: Set[str], courses: Set[str]) -> list[str]:
        """Of these groups and courses (the rules'), those the LMS does not have and the
        adapter would not create, as "group X" / "course Y" (for `sso-bridge check`)."""
