"""Audit events: every login decision, with a machine-readable reason code.

Each event is written to the database (for `sso-bridge audit tail` and the
admin console) and to the log, with the same correlation id the person sees
on the page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from .db import Database
from .logs import get_logger
from .models import AuditEvent

log = get_logger("sso_bridge.audit")

SUCCESS = "success"
FAILURE = "failure"


@dataclass(frozen=True)
class AuditRecord:
    event: str
    outcome: str
    reason: str
    correlation_id: str
    connection: str | None = None
    subject: str | None = None
    user_id: int | None = None
    remote_addr: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Auditor:
    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, record: AuditRecord, also: Callable[[Session], None] | None = None) -> None:
        """Write the event; ``also`` writes more in the same transaction (one commit)."""
        log.info(
            "audit",
            audit_event=record.event,
            outcome=record.outcome,
            reason=record.reason,
            correlation_id=record.correlation_id,
            connection=record.connection,
            subject=record.subject,
            user_id=record.user_id,
            remote_addr=record.remote_addr,
            detail=record.detail,
        )
        # A plain INSERT, not the ORM's unit of work: one is written at every login.
        with self._db.session() as session:
            session.execute(
                insert(AuditEvent).values(
                    event=record.event,
                    outcome=record.outcome,
                    reason=record.reason,
                    correlation_id=record.correlation_id,
                    connection=record.connection,
                    subject=record.subject,
                    user_id=record.user_id,
                    remote_addr=record.remote_addr,
                    detail=record.detail,
                )
            )
            if also is not None:
                also(session)

    def tail(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest events, oldest first."""
        with self._db.session() as session:
            rows = session.scalars(
                select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
            ).all()
            return [event_as_dict(row) for row in reversed(rows)]


def event_as_dict(row: AuditEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at.isoformat() + "Z",
        "correlation_id": row.correlation_id,
        "event": row.event,
        "outcome": row.outcome,
        "reason": row.reason,
        "connection": row.connection,
        "subject": row.subject,
        "user_id": row.user_id,
        "remote_addr": row.remote_addr,
        "detail": row.detail,
    }
