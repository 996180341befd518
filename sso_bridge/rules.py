"""Rules: which LMS groups and courses a person belongs in, from their identity.

Evaluated on every login. What the rules grant is added; what they granted before
and no longer grant is removed; a membership the bridge never granted (an LMS
admin's) is left alone. ``explain`` says which rules fired and why, for
`sso-bridge rules explain`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from .settings import RuleSettings


@dataclass(frozen=True)
class RuleOutcome:
    name: str
    fired: bool
    reasons: tuple[str, ...]
    groups: tuple[str, ...] = ()
    courses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Desired:
    """The memberships the rules grant, and how each rule decided."""

    groups: frozenset[str] = frozenset()
    courses: frozenset[str] = frozenset()
    outcomes: tuple[RuleOutcome, ...] = field(default_factory=tuple)


def facts(profile: Mapping[str, Any], connection: str) -> dict[str, Any]:
    """The values rules look at, from an identity's profile (or a user's stored fields)."""
    email = profile.get("email") or ""
    return {
        "connection": connection,
        "department": profile.get("department"),
        "location": profile.get("location"),
        "job_title": profile.get("job_title"),
        "manager": profile.get("manager"),
        "language": profile.get("language"),
        "employment_status": profile.get("employment_status"),
        "groups": list(profile.get("groups") or []),
        "email_domain": email.rsplit("@", 1)[1] if "@" in email else None,
        "hire_date": profile.get("hire_date"),
    }


def evaluate(
    rules: Sequence[RuleSettings], values: Mapping[str, Any], today: date | None = None
) -> Desired:
    groups: set[str] = set()
    courses: set[str] = set()
    outcomes = []
    for rule in rules:
        fired, reasons = _matches(rule, values, today)
        if fired:
            groups.update(rule.groups)
            courses.update(rule.courses)
        outcomes.append(
            RuleOutcome(rule.name, fired, tuple(reasons), tuple(rule.groups), tuple(rule.courses))
        )
    return Desired(frozenset(groups), frozenset(courses), tuple(outcomes))


def _matches(
    rule: RuleSettings, values: Mapping[str, Any], today: date | None
) -> tuple[bool, list[str]]:
    reasons = []
    for name, accepted in rule.when.items():
        value = values.get(name)
        wanted = {a.casefold() for a in accepted}
        present = (
            [str(v) for v in value]
            if isinstance(value, list)
            else ([] if value is None else [str(value)])
        )
        ok = bool(present) if "*" in wanted else any(v.casefold() in wanted for v in present)
        shown = ", ".join(present) or "(none)"
        reasons.append(f"{name} = {shown} {'matches' if ok else 'does not match'} {accepted}")
        if not ok:
            return False, reasons
    if rule.hired_within_days is not None:
        hired = values.get("hire_date")
        try:
            days = (today or date.today()) - date.fromisoformat(str(hired)) if hired else None
        except ValueError:
            days = None
        ok = days is not None and days.days <= rule.hired_within_days
        shown = f"{hired} ({days.days} days ago)" if days is not None else "(none)"
        reasons.append(
            f"hire_date = {shown} {'is' if ok else 'is not'} within {rule.hired_within_days} days"
        )
        if not ok:
            return False, reasons
    if not rule.when and rule.hired_within_days is None:
        reasons.append("no conditions: applies to everyone")
    return True, reasons
