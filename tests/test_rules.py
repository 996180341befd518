"""Rules: groups and courses from identity attributes; added, removed, explained."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sso_bridge.cli import main
from sso_bridge.db import Database
from sso_bridge.identity import Identity
from sso_bridge.lms.builtin import BuiltinLms
from sso_bridge.models import BuiltinMembership, LmsGrant, User
from sso_bridge.provisioning import Provisioner
from sso_bridge.rules import evaluate, facts
from sso_bridge.settings import RuleSettings
from sso_bridge.state import MemoryStore

RULES = [
    RuleSettings(name="everyone", courses=["safety-101"]),
    RuleSettings(
        name="engineers",
        when={"department": ["engineering"]},
        groups=["cohort-eng"],
        courses=["secure-coding"],
    ),
    RuleSettings(name="london", when={"location": ["London"]}, groups=["site-london"]),
    RuleSettings(
        name="managers", when={"groups": ["managers"], "job_title": ["*"]}, courses=["leadership"]
    ),
    RuleSettings(name="acme staff", when={"email_domain": ["acme.example"]}, groups=["staff"]),
]
ADA = Identity(
    connection="acme",
    subject="E1001",
    email="ada@acme.example",
    department="Engineering",
    location="London",
    groups=("staff",),
)


def test_conditions() -> None:
    desired = evaluate(RULES, facts(ADA.profile(), "acme"))
    assert desired.groups == {"cohort-eng", "site-london", "staff"}
    assert desired.courses == {"safety-101", "secure-coding"}
    outcome = {o.name: o for o in desired.outcomes}
    assert not outcome["managers"].fired
    assert "groups = staff does not match ['managers']" in outcome["managers"].reasons
    manager = replace(ADA, groups=("managers",), job_title="Head of QA")
    assert "leadership" in evaluate(RULES, facts(manager.profile(), "acme")).courses
    no_title = replace(ADA, groups=("managers",))
    assert "leadership" not in evaluate(RULES, facts(no_title.profile(), "acme")).courses


def test_a_rule_must_grant_something() -> None:
    with pytest.raises(ValueError, match="grants no group"):
        RuleSettings(name="empty", when={"department": ["x"]})


@pytest.fixture
def database(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path}/rules.db")
    db.upgrade()
    return db


def memberships(db: Database, user_id: int) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {"group": set(), "course": set()}
    with db.session() as session:
        for row in session.query(BuiltinMembership).filter_by(user_id=user_id):
            result[row.kind].add(row.name)
    return result


def test_rules_add_and_remove_only_what_the_bridge_granted(database: Database) -> None:
    provisioner = Provisioner(database, MemoryStore(), BuiltinLms(database), RULES)
    first = provisioner.provision(ADA)
    assert memberships(database, first.user_id) == {
        "group": {"cohort-eng", "site-london", "staff"},
        "course": {"safety-101", "secure-coding"},
    }
    # An LMS admin enrols Ada in a course by hand: the bridge never granted it.
    with database.session() as session:
        session.add(BuiltinMembership(user_id=first.user_id, kind="course", name="excel-101"))
    moved = provisioner.provision(replace(ADA, department="Sales", location="Paris"))
    assert memberships(database, first.user_id) == {
        "group": {"staff"},
        "course": {"safety-101", "excel-101"},
    }
    assert "group removed: cohort-eng" in moved.lms_actions
    assert "course removed: secure-coding" in moved.lms_actions
    with database.session() as session:
        grants = {
            (g.kind, g.name) for g in session.query(LmsGrant).filter_by(user_id=first.user_id)
        }
    assert grants == {("group", "staff"), ("course", "safety-101")}
    back = provisioner.provision(ADA)
    assert "group added: cohort-eng" in back.lms_actions
    assert provisioner.provision(ADA).lms_actions == ()  # nothing left to do


def test_rules_explain(tmp_path: Path, keys: Any, database: Database) -> None:
    from .test_cli import config_file

    block = """
[[rules]]
name = "engineers"
when = { department = ["Engineering"] }
groups = ["cohort-eng"]
"""
    path = config_file(tmp_path, keys, "")
    text = path.read_text()
    head, tail = text.split("[connections.acme]", 1)
    path.write_text(head + block + "\n[connections.acme]" + tail)
    profile = tmp_path / "ada.json"
    profile.write_text(json.dumps({"department": "Engineering", "email": "ada@acme.example"}))
    result = CliRunner().invoke(
        main, ["--config", str(path), "rules", "explain", "--profile", str(profile), "--json"]
    )
    data = json.loads(result.output)
    assert result.exit_code == 0, result.output
    assert data["groups"] == ["cohort-eng"]
    assert data["rules"][0]["fired"]
    # For a stored user: what would change, without applying it.
    from sso_bridge.settings import load_settings

    settings = load_settings(path)
    db = Database(settings.database.url)
    db.upgrade()
    provisioner = Provisioner(db, MemoryStore(), BuiltinLms(db), [])
    user = provisioner.provision(replace(ADA, department="Engineering"))
    result = CliRunner().invoke(
        main, ["--config", str(path), "rules", "explain", "--user", str(user.user_id)]
    )
    assert result.exit_code == 0, result.output
    assert "FIRES engineers" in result.output
    assert "change:  group would be added: cohort-eng" in result.output
    with db.session() as session:
        assert session.query(BuiltinMembership).count() == 0  # nothing applied
        assert session.get(User, user.user_id) is not None


def test_an_onboarding_rule_for_new_hires() -> None:
    from datetime import date

    onboarding = [RuleSettings(name="new hires", hired_within_days=30, courses=["welcome"])]
    today = date(2026, 11, 28)
    new = facts({"hire_date": "2026-11-02"}, "acme")
    old = facts({"hire_date": "2025-01-15"}, "acme")
    assert evaluate(onboarding, new, today).courses == {"welcome"}
    assert evaluate(onboarding, old, today).courses == set()
    assert evaluate(onboarding, facts({}, "acme"), today).courses == set()
    reasons = evaluate(onboarding, new, today).outcomes[0].reasons
    assert reasons == ("hire_date = 2026-11-02 (26 days ago) is within 30 days",)


def test_hire_dates_are_validated_and_normalised() -> None:
    from sso_bridge.errors import InvalidAttribute
    from sso_bridge.identity import map_identity
    from sso_bridge.settings import TokenConnection

    connection = TokenConnection(type="token", issuer="x", jwks_url="https://p.example/jwks")
    mapped = map_identity(
        "acme", connection, "E1", {"hire_date": "2026-11-02-08:00"}, {"hire_date": "hire_date"}
    )
    assert mapped.hire_date == "2026-11-02"
    with pytest.raises(InvalidAttribute):
        map_identity(
            "acme", connection, "E1", {"hire_date": "next monday"}, {"hire_date": "hire_date"}
        )
