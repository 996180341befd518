"""Durable data: people, their upstream identities, audit events, LMS clients."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[str]: JSON}


class User(Base):
    """A person as the LMS knows them, whatever connection they came through."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The `sub` the LMS sees: random, so it reveals nothing and survives e-mail changes.
    public_id: Mapped[str] = mapped_column(
        String(36), unique=True, default=lambda: str(uuid.uuid4())
    )
    email: Mapped[str | None] = mapped_column(String(320))
    given_name: Mapped[str | None] = mapped_column(String(256))
    family_name: Mapped[str | None] = mapped_column(String(256))
    display_name: Mapped[str | None] = mapped_column(String(512))
    department: Mapped[str | None] = mapped_column(String(256))
    location: Mapped[str | None] = mapped_column(String(256))
    language: Mapped[str | None] = mapped_column(String(35))
    manager: Mapped[str | None] = mapped_column(String(256))
    job_title: Mapped[str | None] = mapped_column(String(256))
    groups: Mapped[list[str]] = mapped_column(default=list)
    employment_status: Mapped[str | None] = mapped_column(String(64))
    hire_date: Mapped[str | None] = mapped_column(String(10))
    blocked: Mapped[bool] = mapped_column(default=False)
    blocked_reason: Mapped[str | None] = mapped_column(String(256))
    lms_account_id: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column()

    links: Mapped[list[IdentityLink]] = relationship(back_populates="user")


class IdentityLink(Base):
    """An upstream identity (connection, subject) that belongs to a user.

    Keyed on the connection's stable subject, never on e-mail: an e-mail can be
    reassigned to another person, and two IdPs may both claim the same address.
    """

    __tablename__ = "identity_links"
    __table_args__ = (UniqueConstraint("connection", "subject", name="uq_link_subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    connection: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column()

    user: Mapped[User] = relationship(back_populates="links")


class AuditEvent(Base):
    """One decision the bridge made, with a machine-readable reason."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_at", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    correlation_id: Mapped[str] = mapped_column(String(64), index=True)
    event: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    connection: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(256))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class OidcClient(Base):
    """An LMS registered with the bridge's OpenID Provider.

    Synchronised from ``provider.clients`` in the configuration at start; the
    secret is kept only as a SHA-256 digest (the configured secrets are random
    and at least 32 characters, so a fast hash is enough).
    """

    __tablename__ = "oidc_clients"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    secret_sha256: Mapped[str | None] = mapped_column(String(64))
    redirect_uris: Mapped[list[str]] = mapped_column(default=list)
    scopes: Mapped[list[str]] = mapped_column(default=list)
    initiate_login_uri: Mapped[str | None] = mapped_column(Text)
    # True unless configured otherwise; rows from before the column existed keep PKCE.
    require_pkce: Mapped[bool] = mapped_column(default=True, server_default=true())
    enabled: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LmsGrant(Base):
    """A group or course membership the bridge itself added in the LMS.

    Rules remove only what is recorded here: a membership an LMS admin set by hand
    was never granted by the bridge, so the bridge never takes it away.
    """

    __tablename__ = "lms_grants"
    __table_args__ = (UniqueConstraint("user_id", "kind", "name", name="uq_lms_grant"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BuiltinMembership(Base):
    """Group and course memberships of the built-in LMS (the bridge's own database)."""

    __tablename__ = "builtin_memberships"
    __table_args__ = (UniqueConstraint("user_id", "kind", "name", name="uq_builtin_membership"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(256))
