"""The normalized identity, and the mapping from upstream attributes into it.

Every connector ends in ``map_identity``: whatever the protocol, provisioning
sees one frozen ``Identity``. Which upstream name feeds which field is
configuration, per connection; each connector type supplies defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date
from typing import Any

from .errors import InvalidAttribute, MissingAttribute
from .settings import ConnectionBase

MAX_VALUE = 256
MAX_GROUPS = 200
# Control characters in a name end up in LMS pages, CSV exports and e-mails: refuse them.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
LANGUAGE = re.compile(r"^[A-Za-z]{2,8}([-_][A-Za-z0-9]{1,8})*$")


@dataclass(frozen=True)
class Identity:
    """One person as an upstream system vouched for them, in the bridge's own terms."""

    connection: str
    subject: str
    email: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    display_name: str | None = None
    department: str | None = None
    location: str | None = None
    language: str | None = None
    manager: str | None = None
    job_title: str | None = None
    groups: tuple[str, ...] = ()
    employment_status: str | None = None
    hire_date: str | None = None
    active: bool = True

    def profile(self) -> dict[str, Any]:
        """The fields provisioning copies onto the user (groups as a list, as stored)."""
        skip = {"connection", "subject", "active"}
        profile = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        profile["groups"] = list(self.groups)
        return profile


def map_identity(
    connection_id: str,
    connection: ConnectionBase,
    subject: str,
    attributes: Mapping[str, Any],
    defaults: Mapping[str, str | tuple[str, ...]],
) -> Identity:
    """Build the identity from upstream ``attributes`` through the connection's mapping.

    ``defaults`` are the connector's own attribute names for each field (one name,
    or several tried in order); the connection's ``attributes`` table replaces them,
    field by field, with one exact name. ``groups`` is the one multi-valued field:
    every other field must carry exactly one value.
    """
    names: dict[str, tuple[str, ...]] = {
        name: (value,) if isinstance(value, str) else value for name, value in defaults.items()
    }
    for target, upstream in connection.attributes.items():
        names[target] = (upstream,)
    values: dict[str, Any] = {}
    for field_name, candidates in names.items():
        source = next((c for c in candidates if _present(attributes.get(c))), None)
        if source is None:
            continue
        raw = attributes[source]
        if field_name == "groups":
            values["groups"] = _groups(source, raw)
        else:
            values[field_name] = _single(field_name, source, raw)
    for required in connection.required_attributes:
        if required not in values:
            expected = names.get(required, (required,))[0]
            raise MissingAttribute(
                f"{required} (upstream name {expected!r}) was not sent", attribute=expected
            )
    status = values.get("employment_status")
    active = status is None or status.lower() in {s.lower() for s in connection.active_statuses}
    return Identity(
        connection=connection_id,
        subject=_subject(subject),
        active=active,
        **values,
    )


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != []


def _subject(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidAttribute("the subject is empty or not a string", attribute="subject")
    if len(value) > MAX_VALUE or CONTROL.search(value):
        raise InvalidAttribute(
            "the subject is too long or has control characters", attribute="subject"
        )
    return value


def _single(field_name: str, source: str, raw: Any) -> str:
    # SAML sends every attribute as a list; one value is the normal case. Several values
    # for a single-valued field is ambiguous (or a duplicated attribute): refuse, don't guess.
    if isinstance(raw, Sequence) and not isinstance(raw, str):
        if len(raw) != 1:
            raise InvalidAttribute(
                f"{source!r} has {len(raw)} values; one expected", attribute=source
            )
        raw = raw[0]
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise InvalidAttribute(f"{source!r} is not a string", attribute=source)
    value = str(raw).strip()
    limit = 320 if field_name == "email" else MAX_VALUE
    if len(value) > limit or CONTROL.search(value):
        raise InvalidAttribute(
            f"{source!r} is too long or has control characters", attribute=source
        )
    if field_name == "email" and not EMAIL.match(value):
        raise InvalidAttribute(f"{source!r} is not an e-mail address", attribute=source)
    if field_name == "language" and not LANGUAGE.match(value):
        raise InvalidAttribute(f"{source!r} is not a language tag", attribute=source)
    if field_name == "hire_date":
        try:
            # A date, or the date part of a timestamp (Workday sends 2026-11-02-08:00).
            value = date.fromisoformat(value[:10]).isoformat()
        except ValueError:
            raise InvalidAttribute(
                f"{source!r} is not a date (YYYY-MM-DD)", attribute=source
            ) from None
    return value


def _groups(source: str, raw: Any) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, Sequence) or len(items) > MAX_GROUPS:
        raise InvalidAttribute(
            f"{source!r} is not a list of at most {MAX_GROUPS} groups", attribute=source
        )
    groups = []
    for item in items:
        if (
            not isinstance(item, str)
            or not item.strip()
            or len(item) > MAX_VALUE
            or CONTROL.search(item)
        ):
            raise InvalidAttribute(f"{source!r} holds an invalid group name", attribute=source)
        groups.append(item.strip())
    return tuple(sorted(set(groups)))
