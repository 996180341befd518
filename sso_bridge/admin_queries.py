"""Read-only queries for the command line (and later the admin console)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import or_, select

from .models import User
from .services import Services, build_services
from .settings import Settings


@contextmanager
def open_services(settings: Settings) -> Iterator[Services]:
    services = build_services(settings)
    try:
        yield services
    finally:
        services.close()


def user_as_dict(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "public_id": user.public_id,
        "email": user.email,
        "display_name": user.display_name,
        "given_name": user.given_name,
        "family_name": user.family_name,
        "department": user.department,
        "location": user.location,
        "language": user.language,
        "manager": user.manager,
        "job_title": user.job_title,
        "groups": user.groups,
        "employment_status": user.employment_status,
        "hire_date": user.hire_date,
        "blocked": user.blocked,
        "lms_account_id": user.lms_account_id,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "last_login_at": user.last_login_at,
    }


def list_users(settings: Settings, limit: int) -> list[dict[str, Any]]:
    with open_services(settings) as svc, svc.db.session() as session:
        users = session.scalars(select(User).order_by(User.id.desc()).limit(limit)).all()
        return [user_as_dict(user) for user in users]


def show_user(settings: Settings, ref: str) -> dict[str, Any] | None:
    with open_services(settings) as svc, svc.db.session() as session:
        clauses = [User.public_id == ref, User.email == ref]
        if ref.isdigit():
            clauses.append(User.id == int(ref))
        user = session.scalars(select(User).where(or_(*clauses))).first()
        if user is None:
            return None
        row = user_as_dict(user)
        row["links"] = [f"{link.connection}:{link.subject}" for link in user.links]
        return row
