"""The Moodle adapter against a strict fake Moodle (tests/fake_moodle.py).

Moodle cannot run here: the fake is built from Moodle's documented web-service
API and source, and the last part of this file tests the fake's own strictness,
so that a lenient fake cannot hide a wrong call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sso_bridge.db import Database
from sso_bridge.identity import Identity
from sso_bridge.lms import build_adapter
from sso_bridge.lms.base import (
    COURSES,
    GROUPS,
    LOGIN_URL,
    SUSPEND,
    AccountProfile,
    LmsAccount,
    LmsMembershipHeld,
    LmsRejected,
    LmsTargetMissing,
    LmsUnavailable,
    lms_deadline,
)
from sso_bridge.lms.moodle import MoodleLms, encode_params, moodle_lang
from sso_bridge.provisioning import Provisioned, Provisioner
from sso_bridge.settings import LmsSettings, RuleSettings
from sso_bridge.state import MemoryStore
from tests.fake_moodle import FakeMoodle, php_decode
from tests.forward_proxy import ForwardProxy
from tests.services import free_port

ADA = AccountProfile(
    external_id="u-7f3a",
    username="Ada.Lovelace@Example.org",
    email="ada.lovelace@example.org",
    given_name="Ada",
    family_name="Lovelace",
    department="Engineering",
    location="London",
    language="en-US",
)


@pytest.fixture
def moodle() -> Iterator[FakeMoodle]:
    with FakeMoodle() as fake:
        fake.add_course("MATH101", "Mathematics")
        fake.add_course("SAFETY", "Safety at work")
        yield fake
        fake.check()


@pytest.fixture
def lms(moodle: FakeMoodle) -> MoodleLms:
    return MoodleLms(moodle.base_url, moodle.token, timeout=2.0)


def ws(moodle: FakeMoodle, function: str | None, data: Any = (), **extra: str) -> Any:
    """A raw REST call to the fake, the token and JSON format included unless overridden."""
    fields: dict[str, str] = {"wstoken": moodle.token, "moodlewsrestformat": "json", **extra}
    if function is not None:
        fields["wsfunction"] = function
    pairs = [*fields.items(), *(data.items() if isinstance(data, dict) else data)]
    response = requests.post(moodle.rest_url, data=pairs, timeout=5)
    assert response.status_code == 200
    return response.json() if fields.get("moodlewsrestformat") == "json" else response.text


def rejected_code(exc: pytest.ExceptionInfo[LmsRejected]) -> str:
    return str(exc.value.context.get("errorcode"))


# --- the account ------------------------------------------------------------------------


def test_adapter_declares_its_name_and_capabilities() -> None:
    assert MoodleLms.name == "moodle"
    assert MoodleLms.capabilities == {GROUPS, COURSES, SUSPEND, LOGIN_URL}


def test_create_then_find_by_idnumber(moodle: FakeMoodle, lms: MoodleLms) -> None:
    assert lms.find(ADA.external_id) is None

    created = lms.create(ADA)
    found = lms.find(ADA.external_id)

    assert found == LmsAccount(account_id=created.account_id, external_id=ADA.external_id)
    (user,) = moodle.users_with_idnumber(ADA.external_id)
    assert str(user["id"]) == created.account_id
    assert user["username"] == "ada.lovelace@example.org"  # lowercased, as Moodle requires
    assert user["auth"] == "userkey"
    assert (user["firstname"], user["lastname"]) == ("Ada", "Lovelace")
    assert (user["department"], user["city"], user["lang"]) == ("Engineering", "London", "en_us")
    assert user["suspended"] == 0


def test_missing_names_become_a_dash_and_auth_is_configurable(moodle: FakeMoodle) -> None:
    lms = MoodleLms(moodle.base_url, moodle.token, login="oidc", auth="oauth2")
    profile = AccountProfile(external_id="u-1", username="cher", email="cher@example.org")

    lms.create(profile)

    (user,) = moodle.users_with_idnumber("u-1")
    assert (user["firstname"], user["lastname"], user["auth"]) == ("-", "-", "oauth2")
    assert user["lang"] == "en"  # none sent: the site default


def test_login_oidc_defaults_to_the_oidc_auth_plugin(moodle: FakeMoodle) -> None:
    lms = MoodleLms(moodle.base_url, moodle.token, login="oidc")
    lms.create(AccountProfile(external_id="u-2", username="bo", email="bo@example.org"))
    assert moodle.users_with_idnumber("u-2")[0]["auth"] == "oidc"


def test_update_brings_profile_fields_in_line(moodle: FakeMoodle, lms: MoodleLms) -> None:
    account = lms.create(ADA)

    lms.update(account, ADA.__class__(**{**ADA.__dict__, "department": "Research"}))

    assert moodle.users_with_idnumber(ADA.external_id)[0]["department"] == "Research"
    assert lms.find(ADA.external_id) is not None


def test_an_update_moodle_skips_is_refused_with_its_warning(
    moodle: FakeMoodle, lms: MoodleLms
) -> None:
    account = lms.create(ADA)
    moodle.add_user(username="other", email="taken@example.org")

    with pytest.raises(LmsRejected) as exc:
        lms.update(account, ADA.__class__(**{**ADA.__dict__, "email": "taken@example.org"}))

    assert rejected_code(exc) == "useremailduplicate"


def test_suspend_and_reinstate(moodle: FakeMoodle, lms: MoodleLms) -> None:
    account = lms.create(ADA)

    lms.set_suspended(account, True)
    suspended = lms.find(ADA.external_id)
    assert suspended is not None and suspended.suspended
    assert moodle.users_with_idnumber(ADA.external_id)[0]["suspended"] == 1

    lms.set_suspended(suspended, False)
    reinstated = lms.find(ADA.external_id)
    assert reinstated is not None and not reinstated.suspended


def test_languages_fall_back_to_what_the_site_has(moodle: FakeMoodle) -> None:
    lms = MoodleLms(moodle.base_url, moodle.token, languages={"en", "de"})
    lms.create(ADA)  # en-US -> en_us is not installed -> en
    assert moodle.users_with_idnumber(ADA.external_id)[0]["lang"] == "en"

    other = AccountProfile(external_id="u-3", username="k", email="k@example.org", language="ko")
    lms.create(other)  # not installed at all: left to the site default
    assert moodle.users_with_idnumber("u-3")[0]["lang"] == "en"


def test_moodle_lang_codes() -> None:
    assert moodle_lang("en-US") == "en_us"
    assert moodle_lang("pt-BR") == "pt_br"
    assert moodle_lang("de") == "de"
    assert moodle_lang(None) is None
    assert moodle_lang("not a language!") is None


def test_an_unknown_language_is_what_moodle_refuses(moodle: FakeMoodle, lms: MoodleLms) -> None:
    with pytest.raises(LmsRejected) as exc:
        lms.create(ADA.__class__(**{**ADA.__dict__, "language": "xx"}))
    assert rejected_code(exc) == "invalidparameter"
    assert moodle.users_with_idnumber(ADA.external_id) == []


def test_create_without_email_is_refused_before_any_call(
    moodle: FakeMoodle, lms: MoodleLms
) -> None:
    with pytest.raises(LmsRejected) as exc:
        lms.create(AccountProfile(external_id="u-4", username="nomail"))
    assert rejected_code(exc) == "missingemail"
    assert moodle.functions_called() == []


def test_username_and_email_taken_are_moodles_refusals(moodle: FakeMoodle, lms: MoodleLms) -> None:
    moodle.add_user(username="ada.lovelace@example.org", email="someone@example.org")
    with pytest.raises(LmsRejected) as exc:
        lms.create(ADA)
    assert rejected_code(exc) == "invalidparameter"
    assert "Username already exists" in str(exc.value)

    moodle.reset()
    moodle.add_user(username="someone", email="ADA.LOVELACE@example.org")
    with pytest.raises(LmsRejected) as exc:
        lms.create(ADA)
    assert "Email address already exists" in str(exc.value)


def test_two_accounts_with_one_idnumber_are_refused_not_guessed(
    moodle: FakeMoodle, lms: MoodleLms
) -> None:
    # Moodle does not keep user idnumbers unique: an admin can make a second one.
    lms.create(ADA)
    moodle.add_user(username="ada2", email="ada2@example.org", idnumber=ADA.external_id)

    with pytest.raises(LmsRejected) as exc:
        lms.find(ADA.external_id)
    assert rejected_code(exc) == "duplicateidnumber"


def test_find_needs_an_exact_idnumber_match(moodle: FakeMoodle, lms: MoodleLms) -> None:
    lms.create(ADA)
    assert lms.find(ADA.external_id.upper()) is None


# --- cohorts ------------------------------------------------------------------------------


def test_cohort_add_and_remove(moodle: FakeMoodle, lms: MoodleLms) -> None:
    account = lms.create(ADA)
    moodle.add_cohort("staff", "All staff")

    lms.add_to_group(account, "staff")
    lms.add_to_group(account, "staff")  # already a member: a no-op
    found = lms.find(ADA.external_id)
    assert found is not None and found.groups == {"staff"}
    assert moodle.cohorts_of(int(account.account_id)) == {"staff"}

    lms.remove_from_group(account, "staff")
    lms.remove_from_group(account, "staff")  # no longer a member: a no-op
    lms.remove_from_group(account, "no-such-cohort")
    found = lms.find(ADA.external_id)
    assert found is not None and found.groups == frozenset()


def test_a_missing_cohort_is_created_once(moodle: FakeMoodle, lms: MoodleLms) -> None:
    account = lms.create(ADA)

    lms.add_to_group(account, "engineering")

    cohort_id = moodle.cohort_id("engineering")
    assert cohort_id is not None and moodle.cohorts[cohort_id]["name"] == "engineering"
    found = lms.find(ADA.external_id)
    assert found is not None and found.groups == {"engineering"}
    assert moodle.functions_called().count("core_cohort_create_cohorts") == 1


def test_a_missing_cohort_is_refused_when_creating_is_off(moodle: FakeMoodle) -> None:
    lms = MoodleLms(moodle.base_url, moodle.token, create_cohorts=False)
    account = lms.create(ADA)
    with pytest.raises(LmsTargetMissing) as exc:
        lms.add_to_group(account, "engineering")
    assert rejected_code(exc) == "nocohort"
    assert moodle.cohort_id("engineering") is None


def test_missing_targets_names_the_cohorts_and_courses_moodle_lacks(moodle: FakeMoodle) -> None:
    moodle.add_cohort("sales")
    course_id = moodle.add_course("HIST", "History")
    lms = MoodleLms(moodle.base_url, moodle.token, create_cohorts=False)

    missing = lms.missing_targets(
        {"sales", "engineering"}, {"HIST", f"id:{course_id}", "NOPE", "id:999999"}
    )

    assert missing == ["group engineering", "course NOPE", "course id:999999"]
    # With cohorts created on demand, only the courses can be missing.
    creating = MoodleLms(moodle.base_url, moodle.token, create_cohorts=True)
    assert creating.missing_targets({"engineering"}, {"HIST"}) == []


def test_managed_cohorts_limit_what_is_read(moodle: FakeMoodle) -> None:
    lms = MoodleLms(moodle.base_url, moodle.token, managed_cohorts={"staff"})
    account = lms.create(ADA)
    lms.add_to_group(account, "staff")
    lms.add_to_group(account, "admins-own")  # made by someone else: not the bridge's business

    found = lms.find(ADA.external_id)
    assert found is not None and found.groups == {"staff"}
    assert moodle.cohorts_of(int(account.account_id)) == {"staff", "admins-own"}


def test_a_cohort_deleted_since_it_was_cached_is_listed_again(
    moodle: FakeMoodle, lms: MoodleLms
) -> None:
    account = lms.create(ADA)
    lms.add_to_group(account, "staff")
    assert lms.find(ADA.external_id) is not None  # caches the cohort list

    old = moodle.cohort_id("staff")
    assert old is not None
    del moodle.cohorts[old]
    moodle.cohort_members.clear()

    found = lms.find(ADA.external_id)
    assert found is not None and found.groups == frozenset()
    assert moodle.functions_called().count("core_cohort_get_cohorts") == 2


# --- courses ------------------------------------------------------------------------------


def test_enrol_and_unenrol_by_shortname(moodle: FakeMoodle, lms: MoodleLms) -> None:
    account = lms.create(ADA)

    lms.enrol(account, "MATH101")
    lms.enrol(account, "MATH101")  # already enrolled: Moodle keeps one enrolment
    found = lms.find(ADA.external_id)
    assert found is not None and "MATH101" in found.courses
    user_id = int(account.account_id)
    course_id = next(c for c, u in moodle.enrolments if u == user_id)
    assert moodle.enrolments[(course_id, user_id)] == 5  # student
    assert f"id:{course_id}" in found.courses

    lms.unenrol(account, "MATH101")
    lms.unenrol(account, "MATH101")
    lms.unenrol(account, "NO-SUCH-COURSE")
    found = lms.find(ADA.external_id)
    assert found is not None and found.courses == frozenset()
    # The shortname was resolved once, then cached.
    assert moodle.functions_called().count("core_course_get_courses_by_field") == 2


def test_enrol_by_course_id_and_role(moodle: FakeMoodle) -> None:
    lms = MoodleLms(moodle.base_url, moodle.token, student_role_id=4)
    account = lms.create(ADA)
    course_id = moodle.add_course("HIST", "History")

    lms.enrol(account, f"id:{course_id}")

    assert moodle.enrolments[(course_id, int(account.account_id))] == 4
    assert moodle.courses_of(int(account.account_id)) == {"HIST"}


def test_enrol_in_an_unknown_course_is_refused(moodle: FakeMoodle, lms: MoodleLms) -> None:
    account = lms.create(ADA)
    with pytest.raises(LmsTargetMissing) as exc:
        lms.enrol(account, "NOPE")
    assert rejected_code(exc) == "nocourse"


def test_a_course_without_manual_enrolment_is_moodles_refusal(
    moodle: FakeMoodle, lms: MoodleLms
) -> None:
    moodle.add_course("SELF", manual=False)
    account = lms.create(ADA)
    with pytest.raises(LmsRejected) as exc:
        lms.enrol(account, "SELF")
    assert rejected_code(exc) == "wsnoinstance"


def test_courses_are_reported_as_the_rules_spell_them(moodle: FakeMoodle) -> None:
    math = moodle.add_course("ALGEBRA")
    hist = moodle.add_course("HIST")
    # One rule names ALGEBRA by id (with a leading zero), another names SAFETY by shortname.
    lms = MoodleLms(moodle.base_url, moodle.token, rule_courses=[f"id:0{math}", "SAFETY"])
    account = lms.create(ADA)
    for name in (f"id:0{math}", "SAFETY", f"id:{hist}"):
        lms.enrol(account, name)

    found = lms.find(ADA.external_id)

    assert found is not None
    # HIST is in no rule: both spellings, so a grant made under either is still found.
    assert found.courses == {f"id:0{math}", "SAFETY", "HIST", f"id:{hist}"}


def test_a_course_named_both_ways_is_never_unenrolled_by_one_name(moodle: FakeMoodle) -> None:
    safety = next(c for c, v in moodle.courses.items() if v["shortname"] == "SAFETY")
    lms = MoodleLms(moodle.base_url, moodle.token, rule_courses=["SAFETY", f"id:{safety}"])
    account = lms.create(ADA)
    lms.enrol(account, "SAFETY")
    found = lms.find(ADA.external_id)
    assert found is not None and found.courses == {"SAFETY", f"id:{safety}"}

    lms.unenrol(found, f"id:{safety}")
    lms.unenrol(found, "SAFETY")

    assert moodle.courses_of(int(account.account_id)) == {"SAFETY"}
    assert "enrol_manual_unenrol_users" not in moodle.functions_called()


def test_enrol_leaves_an_enrolment_an_admin_suspended(moodle: FakeMoodle, lms: MoodleLms) -> None:
    account = lms.create(ADA)
    user_id = int(account.account_id)
    lms.enrol(account, "SAFETY")
    safety = next(c for c, u in moodle.enrolments if u == user_id)
    moodle.suspend_enrolment(safety, user_id)
    found = lms.find(ADA.external_id)
    assert found is not None and found.courses == frozenset()  # Moodle lists active ones only
    before = moodle.functions_called().count("enrol_manual_enrol_users")

    with pytest.raises(LmsMembershipHeld) as held:
        lms.enrol(found, "SAFETY")

    assert held.value.context["courseid"] == safety
    assert moodle.functions_called().count("enrol_manual_enrol_users") == before
    assert moodle.courses_of(user_id, active=True) == set()
    assert (safety, user_id) in moodle.suspended_enrolments
    # Someone else's suspension in the course does not stop this person's enrolment.
    lms.enrol(found, "MATH101")
    assert moodle.courses_of(user_id, active=True) == {"MATH101"}


def test_the_adapter_options_come_from_the_settings(moodle: FakeMoodle, tmp_path: Any) -> None:
    settings = LmsSettings(
        type="moodle",
        api_url=moodle.base_url,
        api_token=moodle.token,
        moodle_auth="oauth2",
        moodle_managed_cohorts=["staff"],
        moodle_create_cohorts=False,
        moodle_cache_ttl=0,
    )
    db = Database(f"sqlite:///{tmp_path}/bridge.db")
    lms = build_adapter(settings, db, (), None)
    moodle.add_cohort("staff")
    other = moodle.add_cohort("other")

    account = lms.create(ADA)
    lms.add_to_group(account, "staff")
    moodle.cohort_members.add((other, int(account.account_id)))
    with pytest.raises(LmsRejected):
        lms.add_to_group(account, "no-such-cohort")  # not created
    found = lms.find(ADA.external_id)
    lms.find(ADA.external_id)

    assert moodle.users_with_idnumber(ADA.external_id)[0]["auth"] == "oauth2"
    assert moodle.cohort_id("no-such-cohort") is None
    assert found is not None and found.groups == {"staff"}  # "other" is not managed
    assert moodle.functions_called().count("core_cohort_get_cohorts") == 2  # no cache
    db.dispose()


def test_calls_go_through_the_configured_outbound_proxy(moodle: FakeMoodle, tmp_path: Any) -> None:
    settings = LmsSettings(type="moodle", api_url=moodle.base_url, api_token=moodle.token)
    db = Database(f"sqlite:///{tmp_path}/bridge.db")
    with ForwardProxy() as proxy:
        assert build_adapter(settings, db, (), proxy.url).find("nobody") is None
        relayed = proxy.seen
        assert build_adapter(settings, db, (), None).find("nobody") is None
    db.dispose()
    # A proxy is sent the absolute URL; the adapter without one went direct.
    assert relayed == [f"POST {moodle.rest_url}"]
    assert proxy.seen == relayed


# --- courses through provisioning ---------------------------------------------------------


@pytest.fixture
def database(tmp_path: Any) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path}/bridge.db")
    db.upgrade()
    yield db
    db.dispose()


def provisioner(moodle: FakeMoodle, database: Database, *rules: RuleSettings) -> Provisioner:
    """The bridge as services.py wires it: the adapter knows the rules' course names."""
    adapter = build_adapter(
        LmsSettings(type="moodle", api_url=moodle.base_url, api_token=moodle.token),
        database,
        rules,
        None,
    )
    return Provisioner(database, MemoryStore(), adapter, rules)


def person(**fields: Any) -> Identity:
    base: dict[str, Any] = {
        "connection": "hr",
        "subject": "E1",
        "email": "ada@example.org",
        "given_name": "Ada",
        "family_name": "Lovelace",
        "department": "Engineering",
        "location": "London",
        "employment_status": "active",
    }
    return Identity(**{**base, **fields})


def course_actions(result: Provisioned) -> list[str]:
    return [a for a in result.lms_actions if a.startswith("course")]


def test_one_course_named_both_ways_by_two_rules_does_not_flap(
    moodle: FakeMoodle, database: Database
) -> None:
    safety = next(c for c, v in moodle.courses.items() if v["shortname"] == "SAFETY")
    rules = (
        RuleSettings(name="by name", when={"department": ["Engineering"]}, courses=["SAFETY"]),
        RuleSettings(name="by id", when={"location": ["London"]}, courses=[f"id:{safety}"]),
    )
    bridge = provisioner(moodle, database, *rules)
    bridge.provision(person())
    user_id = int(moodle.users_with_idnumber(bridge.provision(person()).public_id)[0]["id"])
    assert moodle.courses_of(user_id) == {"SAFETY"}

    # Only the rule by id still matches: the course stays, at this login and the next,
    # neither unenrolled nor enrolled again. (Provisioning still notes the name it let
    # go as "course removed: SAFETY": the adapter cannot tell it otherwise.)
    for _ in range(3):
        bridge.provision(person(department="Sales"))
        assert moodle.courses_of(user_id, active=True) == {"SAFETY"}
    assert "enrol_manual_unenrol_users" not in moodle.functions_called()
    assert moodle.functions_called().count("enrol_manual_enrol_users") == 1


def test_a_rule_by_id_is_not_enrolled_again_at_every_login(
    moodle: FakeMoodle, database: Database
) -> None:
    safety = next(c for c, v in moodle.courses.items() if v["shortname"] == "SAFETY")
    rule = RuleSettings(name="by id", when={"location": ["London"]}, courses=[f"id:{safety}"])
    bridge = provisioner(moodle, database, rule)

    assert course_actions(bridge.provision(person())) == [f"course added: id:{safety}"]
    assert course_actions(bridge.provision(person())) == []
    assert moodle.functions_called().count("enrol_manual_enrol_users") == 1
    # And what the rule stops granting is taken away, spelled the same way.
    assert course_actions(bridge.provision(person(location="Paris"))) == [
        f"course removed: id:{safety}"
    ]


def test_respelling_a_rule_neither_unenrols_nor_enrols_again(
    moodle: FakeMoodle, database: Database
) -> None:
    safety = next(c for c, v in moodle.courses.items() if v["shortname"] == "SAFETY")
    by_name = RuleSettings(name="safety", courses=["SAFETY"])
    public_id = provisioner(moodle, database, by_name).provision(person()).public_id
    user_id = int(moodle.users_with_idnumber(public_id)[0]["id"])

    by_id = RuleSettings(name="safety", courses=[f"id:{safety}"])
    bridge = provisioner(moodle, database, by_id)
    for _ in range(2):
        assert course_actions(bridge.provision(person())) == []
    assert moodle.courses_of(user_id) == {"SAFETY"}
    assert moodle.functions_called().count("enrol_manual_enrol_users") == 1


def test_a_rule_never_reactivates_an_enrolment_an_admin_suspended(
    moodle: FakeMoodle, database: Database
) -> None:
    rule = RuleSettings(name="engineers", when={"department": ["Engineering"]}, courses=["SAFETY"])
    bridge = provisioner(moodle, database, rule)
    public_id = bridge.provision(person()).public_id
    user_id = int(moodle.users_with_idnumber(public_id)[0]["id"])
    safety = next(c for c, u in moodle.enrolments if u == user_id)
    moodle.suspend_enrolment(safety, user_id)

    again = bridge.provision(person())
    assert (safety, user_id) in moodle.suspended_enrolments
    assert "course left as an LMS admin set it: SAFETY" in again.lms_actions
    assert "course added: SAFETY" not in again.lms_actions
    # Nor does the bridge unenrol it when the rule stops: the suspension is the admin's.
    bridge.provision(person(department="Sales"))
    assert (safety, user_id) in moodle.suspended_enrolments
    assert moodle.functions_called().count("enrol_manual_enrol_users") == 1
    assert "enrol_manual_unenrol_users" not in moodle.functions_called()


# --- the handoff --------------------------------------------------------------------------


def test_login_url_with_wantsurl_lands_on_the_target(moodle: FakeMoodle, lms: MoodleLms) -> None:
    account = lms.create(ADA)
    course_id = moodle.add_course("HIST")
    target = f"{moodle.base_url}/course/view.php?id={course_id}"

    url = lms.login_url(account, target)

    assert url is not None
    assert parse_qs(urlsplit(url).query)["wantsurl"] == [target]
    browser = requests.Session()
    page = browser.get(url, timeout=5)
    assert page.status_code == 200 and page.url == target
    assert [r.status_code for r in page.history] == [303]
    assert f"for {ADA.username.lower()}" in page.text
    (login,) = moodle.logins
    assert (login.idnumber, login.redirected_to) == (ADA.external_id, target)
    assert moodle.pages == [(ADA.username.lower(), f"/course/view.php?id={course_id}")]

    # The key was used up.
    again = requests.get(url, timeout=5, allow_redirects=False)
    assert again.status_code == 404 and "invalidkey" in again.text


def test_a_new_login_url_replaces_the_earlier_one(moodle: FakeMoodle, lms: MoodleLms) -> None:
    account = lms.create(ADA)
    first = lms.login_url(account, moodle.base_url + "/my/")
    second = lms.login_url(account, moodle.base_url + "/my/")
    assert first and second

    assert "invalidkey" in requests.get(first, timeout=5).text
    assert requests.get(second, timeout=5).status_code == 200


def test_a_foreign_wantsurl_lands_on_the_site_root(moodle: FakeMoodle, lms: MoodleLms) -> None:
    account = lms.create(ADA)
    url = lms.login_url(account, "https://elsewhere.example.net/steal")
    assert url is not None

    response = requests.get(url, timeout=5, allow_redirects=False)

    assert response.status_code == 303 and response.headers["Location"] == moodle.base_url


def test_login_url_for_an_account_moodle_does_not_know(lms: MoodleLms) -> None:
    ghost = LmsAccount(account_id="999", external_id="u-ghost")
    with pytest.raises(LmsRejected) as exc:
        lms.login_url(ghost, "/my/")
    assert rejected_code(exc) == "invalidparameter"


def test_login_oidc_leaves_the_handoff_to_the_provider(moodle: FakeMoodle) -> None:
    lms = MoodleLms(moodle.base_url, moodle.token, login="oidc")
    account = lms.create(ADA)
    assert lms.login_url(account, moodle.base_url + "/my/") is None
    assert "auth_userkey_request_login_url" not in moodle.functions_called()


# --- failures -----------------------------------------------------------------------------


def test_a_create_whose_answer_timed_out_is_found_on_retry(moodle: FakeMoodle) -> None:
    lms = MoodleLms(moodle.base_url, moodle.token, timeout=0.5)
    moodle.delay_next(1.5)

    with pytest.raises(LmsUnavailable):
        lms.create(ADA)

    # What the provisioner does on a retry: look up first, create only if absent.
    account = lms.find(ADA.external_id) or lms.create(ADA)
    assert len(moodle.users_with_idnumber(ADA.external_id)) == 1
    assert account.external_id == ADA.external_id
    assert moodle.functions_called().count("core_user_create_users") == 1


def test_an_invalid_token_is_refused(moodle: FakeMoodle) -> None:
    secret = "0123456789abcdef0123456789abcdef"
    lms = MoodleLms(moodle.base_url, secret)
    with pytest.raises(LmsRejected) as exc:
        lms.find(ADA.external_id)
    assert rejected_code(exc) == "invalidtoken"
    assert "invalidtoken" in str(exc.value)
    assert secret not in str(exc.value) and secret not in repr(exc.value.context)
    assert secret not in repr(lms)


def test_http_503_is_unavailable_then_the_retry_works(moodle: FakeMoodle, lms: MoodleLms) -> None:
    moodle.fail_next(1, status=503)
    with pytest.raises(LmsUnavailable):
        lms.find(ADA.external_id)
    assert lms.find(ADA.external_id) is None


@pytest.mark.parametrize("status", [500, 502, 429])
def test_other_transient_statuses_are_unavailable(
    moodle: FakeMoodle, lms: MoodleLms, status: int
) -> None:
    moodle.fail_next(1, status=status)
    with pytest.raises(LmsUnavailable):
        lms.find(ADA.external_id)


def test_a_4xx_is_a_refusal(moodle: FakeMoodle, lms: MoodleLms) -> None:
    moodle.fail_next(1, status=403)
    with pytest.raises(LmsRejected):
        lms.find(ADA.external_id)


def test_maintenance_mode_is_unavailable(moodle: FakeMoodle, lms: MoodleLms) -> None:
    moodle.maintenance = True
    with pytest.raises(LmsUnavailable) as exc:
        lms.find(ADA.external_id)
    assert exc.value.context["errorcode"] == "sitemaintenance"


def test_nothing_listening_is_unavailable() -> None:
    lms = MoodleLms(f"http://127.0.0.1:{free_port()}", "token", timeout=1.0)
    with pytest.raises(LmsUnavailable):
        lms.find(ADA.external_id)


def test_an_html_page_with_200_is_a_refusal(moodle: FakeMoodle, lms: MoodleLms) -> None:
    moodle.fail_next(1, status=200)  # e.g. a proxy's or a theme's page instead of the answer
    with pytest.raises(LmsRejected) as exc:
        lms.find(ADA.external_id)
    assert rejected_code(exc) == "unexpectedanswer"


def test_a_wrong_base_url_is_a_refusal(moodle: FakeMoodle) -> None:
    lms = MoodleLms(moodle.base_url + "/moodle", moodle.token)  # POST to a page: 405
    with pytest.raises(LmsRejected):
        lms.find(ADA.external_id)


def test_proxies_from_the_environment_are_not_used(
    moodle: FakeMoodle, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    lms = MoodleLms(moodle.base_url, moodle.token)
    assert lms.find(ADA.external_id) is None


def test_the_token_travels_in_the_body_not_the_url(moodle: FakeMoodle, lms: MoodleLms) -> None:
    seen: list[requests.PreparedRequest] = []
    original = lms._session.send

    def spy(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        seen.append(request)
        return original(request, **kwargs)

    lms._session.send = spy  # type: ignore[method-assign]
    lms.find(ADA.external_id)
    assert seen
    for request in seen:
        assert request.method == "POST"
        assert moodle.token not in (request.url or "")
        assert f"wstoken={moodle.token}" in str(request.body)


def test_encode_params_is_moodles_array_encoding() -> None:
    pairs = encode_params(
        {"users": [{"id": 3, "suspended": True, "skip": None}], "values": ["a", "b"], "field": "x"}
    )
    assert pairs == [
        ("users[0][id]", "3"),
        ("users[0][suspended]", "1"),
        ("values[0]", "a"),
        ("values[1]", "b"),
        ("field", "x"),
    ]
    assert php_decode(pairs) == {
        "users": {"0": {"id": "3", "suspended": "1"}},
        "values": {"0": "a", "1": "b"},
        "field": "x",
    }


# --- the fake is as strict as Moodle -------------------------------------------------------


def test_fake_refuses_a_missing_or_wrong_token(moodle: FakeMoodle) -> None:
    args = {"field": "idnumber", "values[0]": "x"}
    for token in ("", "wrong"):
        answer = ws(moodle, "core_user_get_users_by_field", args, wstoken=token)
        assert answer["exception"] == "moodle_exception"
        assert answer["errorcode"] == "invalidtoken"
    response = requests.post(
        moodle.rest_url,
        data={"wsfunction": "core_user_get_users_by_field", "moodlewsrestformat": "json"},
        timeout=5,
    )
    assert response.status_code == 200 and response.json()["errorcode"] == "invalidtoken"


def test_fake_refuses_unknown_functions_as_moodle_does(moodle: FakeMoodle) -> None:
    unknown = ws(moodle, "core_user_make_coffee")
    assert (unknown["exception"], unknown["errorcode"]) == (
        "dml_missing_record_exception",
        "invalidrecord",
    )
    outside = ws(moodle, "core_user_delete_users", {"userids[0]": "3"})
    assert (outside["exception"], outside["errorcode"]) == (
        "webservice_access_exception",
        "accessexception",
    )
    nameless = ws(moodle, None)
    assert nameless["errorcode"] == "invalidparameter"


def test_fake_refuses_a_function_outside_the_tokens_service(moodle: FakeMoodle) -> None:
    moodle.service_functions = moodle.service_functions - {"core_cohort_create_cohorts"}
    lms = MoodleLms(moodle.base_url, moodle.token)
    account = lms.create(ADA)
    with pytest.raises(LmsRejected) as exc:
        lms.add_to_group(account, "new-cohort")
    assert rejected_code(exc) == "accessexception"


def test_fake_refuses_wrong_parameter_shapes(moodle: FakeMoodle) -> None:
    scalar = ws(moodle, "core_user_get_users_by_field", {"field": "idnumber", "values": "x"})
    assert scalar["errorcode"] == "invalidparameter"
    assert scalar["debuginfo"].startswith("values => Invalid parameter value detected: Only arrays")

    array = ws(moodle, "core_user_get_users_by_field", {"field[0]": "idnumber", "values[0]": "x"})
    assert "Scalar type expected" in array["debuginfo"]

    missing = ws(moodle, "core_user_get_users_by_field", {"field": "idnumber"})
    assert missing["debuginfo"] == "Missing required key in single structure: values"

    extra = ws(
        moodle, "core_user_get_users_by_field", {"field": "idnumber", "values[0]": "x", "x": "1"}
    )
    assert extra["debuginfo"] == "Unexpected keys (x) detected in parameter array."

    nested = ws(
        moodle,
        "core_user_create_users",
        {"users[0][username]": "bo", "users[0][firstname]": "B", "users[0][email]": "b@x.org"},
    )
    assert nested["debuginfo"] == (
        "users => Invalid parameter value detected: "
        "Missing required key in single structure: lastname"
    )

    not_int = ws(moodle, "core_enrol_get_users_courses", {"userid": "3a"})
    assert not_int["errorcode"] == "invalidparameter"
    assert 'the server was expecting "int" type' in not_int["debuginfo"]


def test_fake_ignores_a_json_body_as_moodle_does(moodle: FakeMoodle) -> None:
    response = requests.post(
        moodle.rest_url
        + f"?wstoken={moodle.token}&wsfunction=core_enrol_get_users_courses"
        + "&moodlewsrestformat=json",
        data=json.dumps({"userid": 2}),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert response.json()["debuginfo"] == "Missing required key in single structure: userid"


def test_fake_answers_xml_without_moodlewsrestformat(moodle: FakeMoodle) -> None:
    text = ws(moodle, "core_enrol_get_users_courses", {"userid": "2"}, moodlewsrestformat="")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>')


def test_fake_checks_values_as_moodle_param_types_do(moodle: FakeMoodle) -> None:
    base = {
        "users[0][firstname]": "B",
        "users[0][lastname]": "C",
        "users[0][email]": "b@example.org",
    }
    upper = ws(moodle, "core_user_create_users", {**base, "users[0][username]": "Bo"})
    assert 'expecting "username" type' in upper["debuginfo"]

    manual = ws(moodle, "core_user_create_users", {**base, "users[0][username]": "bo"})
    assert manual["errorcode"] == "invalidparameter"
    assert "you must provide a password, or set createpassword" in manual["debuginfo"]

    field = ws(moodle, "core_user_get_users_by_field", {"field": "firstname", "values[0]": "B"})
    assert (field["exception"], field["errorcode"]) == ("coding_exception", "codingerror")


def test_fake_creates_users_all_or_nothing(moodle: FakeMoodle) -> None:
    def user(i: int, name: str) -> dict[str, str]:
        return {
            f"users[{i}][username]": name,
            f"users[{i}][firstname]": "F",
            f"users[{i}][lastname]": "L",
            f"users[{i}][email]": f"{name}@example.org",
            f"users[{i}][auth]": "userkey",
        }

    answer = ws(moodle, "core_user_create_users", {**user(0, "one"), **user(1, "admin")})
    assert "Username already exists: admin" in answer["debuginfo"]
    assert not any(u["username"] == "one" for u in moodle.users.values())


def test_fake_update_of_a_missing_user_is_a_warning(moodle: FakeMoodle) -> None:
    answer = ws(
        moodle, "core_user_update_users", {"users[0][id]": "999", "users[0][suspended]": "1"}
    )
    assert answer["warnings"][0]["warningcode"] == "usernotupdatednotexist"


def test_fake_models_a_suspended_enrolment_as_moodle_does(moodle: FakeMoodle) -> None:
    # enrol/externallib.php lists only active enrolments; enrol_user() on an existing
    # enrolment writes the status the web service passes: active unless suspend=1.
    user_id = moodle.add_user(username="bo")
    course_id = moodle.add_course("ART")
    enrol = {
        "enrolments[0][roleid]": "5",
        "enrolments[0][userid]": str(user_id),
        "enrolments[0][courseid]": str(course_id),
    }
    assert ws(moodle, "enrol_manual_enrol_users", enrol) is None
    moodle.suspend_enrolment(course_id, user_id)

    listed = ws(moodle, "core_enrol_get_users_courses", {"userid": str(user_id)})
    assert listed == []
    suspended = ws(
        moodle,
        "core_enrol_get_enrolled_users",
        {
            "courseid": str(course_id),
            "options[0][name]": "onlysuspended",
            "options[0][value]": "1",
            "options[1][name]": "userfields",
            "options[1][value]": "id",
        },
    )
    assert suspended == [{"id": user_id}]
    active = ws(
        moodle,
        "core_enrol_get_enrolled_users",
        {"courseid": str(course_id), "options[0][name]": "onlyactive", "options[0][value]": "1"},
    )
    assert active == []
    both = ws(
        moodle,
        "core_enrol_get_enrolled_users",
        {
            "courseid": str(course_id),
            "options[0][name]": "onlyactive",
            "options[0][value]": "1",
            "options[1][name]": "onlysuspended",
            "options[1][value]": "1",
        },
    )
    assert both["errorcode"] == "codingerror"

    assert ws(moodle, "enrol_manual_enrol_users", enrol) is None  # Moodle reactivates it
    assert moodle.courses_of(user_id, active=True) == {"ART"}
    listed = ws(moodle, "core_enrol_get_users_courses", {"userid": str(user_id)})
    assert [c["shortname"] for c in listed] == ["ART"]


def test_fake_keys_expire(moodle: FakeMoodle, lms: MoodleLms) -> None:
    moodle.key_lifetime = 0.2
    account = lms.create(ADA)
    url = lms.login_url(account, moodle.base_url + "/my/")
    assert url is not None
    time.sleep(0.4)
    response = requests.get(url, timeout=5, allow_redirects=False)
    assert response.status_code == 404 and "expiredkey" in response.text
    assert moodle.logins == []


def test_check_reports_what_the_adapter_cannot_do(
    tmp_path: Any, keys: Any, moodle: FakeMoodle
) -> None:
    import json as _json

    from click.testing import CliRunner

    from sso_bridge.cli import main

    from .test_cli import config_file

    extra = """
[lms]
type = "scim"
api_url = "http://127.0.0.1:9/scim"
api_token = "t"
base_url = "http://127.0.0.1:5000/lms"
client_id = "lms"

[[rules]]
name = "everyone"
courses = ["safety"]
"""
    text = config_file(tmp_path, keys, "").read_text()
    head, tail = text.split("[connections.acme]", 1)
    path = tmp_path / "scim.toml"
    path.write_text(head + extra + "\n[connections.acme]" + tail)
    rows = {
        r["check"]: r
        for r in _json.loads(
            CliRunner().invoke(main, ["--config", str(path), "check", "--json"]).output
        )
    }
    assert not rows["LMS adapter scim"]["ok"]
    assert "courses" in rows["LMS adapter scim"]["problem"]
    good = (
        head.replace("", "")
        + f"""
[lms]
type = "moodle"
api_url = "{moodle.base_url}"
api_token = "{moodle.token}"
base_url = "http://127.0.0.1:5000/lms"
client_id = "lms"
"""
        + "\n[connections.acme]"
        + tail
    )
    path.write_text(good)
    rows = {
        r["check"]: r
        for r in _json.loads(
            CliRunner().invoke(main, ["--config", str(path), "check", "--json"]).output
        )
    }
    assert rows["LMS adapter moodle"]["ok"], rows
    path.write_text(good.replace(moodle.token, "wrong-token"))
    rows = {
        r["check"]: r
        for r in _json.loads(
            CliRunner().invoke(main, ["--config", str(path), "check", "--json"]).output
        )
    }
    assert "invalidtoken" in rows["LMS adapter moodle"]["problem"]


def test_check_names_the_courses_a_rule_wants_that_moodle_lacks(
    tmp_path: Any, keys: Any, moodle: FakeMoodle
) -> None:
    from click.testing import CliRunner

    from sso_bridge.cli import main

    from .test_cli import config_file

    moodle.add_course("SAFETY", "Safety at work")
    lms_and_rules = f"""
[lms]
type = "moodle"
api_url = "{moodle.base_url}"
api_token = "{moodle.token}"
base_url = "http://127.0.0.1:5000/lms"
client_id = "lms"

[[rules]]
name = "everyone"
courses = ["SAFETY", "SAFTEY"]
"""
    head, tail = config_file(tmp_path, keys).read_text().split("[connections.acme]", 1)
    path = tmp_path / "moodle.toml"
    path.write_text(head + lms_and_rules + "\n[connections.acme]" + tail)

    result = CliRunner().invoke(main, ["--config", str(path), "check", "--json"])

    row = next(r for r in json.loads(result.output) if r["check"] == "LMS adapter moodle")
    assert not row["ok"]
    assert "course SAFTEY" in row["problem"] and "course SAFETY" not in row["problem"]
    assert result.exit_code != 0


def test_an_answer_over_the_size_limit_is_refused_not_read(
    moodle: FakeMoodle, lms: MoodleLms, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Memory is bounded by the limit, not by what the server sends.
    lms.create(ADA)
    monkeypatch.setattr("sso_bridge.lms.moodle.MAX_ANSWER_BYTES", 64)
    with pytest.raises(LmsRejected) as exc:
        lms.find(ADA.external_id)
    assert "sent more than 64 bytes" in str(exc.value)
    assert exc.value.context["function"] == "core_user_get_users_by_field"


def test_check_warns_when_every_cohort_is_read_at_each_login(
    tmp_path: Any, keys: Any, moodle: FakeMoodle
) -> None:
    from click.testing import CliRunner

    from sso_bridge.cli import main

    from .test_cli import config_file

    head, tail = config_file(tmp_path, keys).read_text().split("[connections.acme]", 1)
    lms = f"""
[lms]
type = "moodle"
api_url = "{moodle.base_url}"
api_token = "{moodle.token}"
base_url = "http://127.0.0.1:5000/lms"
client_id = "lms"
"""
    rows = {}
    for managed in ("", 'moodle_managed_cohorts = ["staff"]\n'):
        path = tmp_path / "moodle.toml"
        path.write_text(head + lms + managed + "\n[connections.acme]" + tail)
        result = CliRunner().invoke(main, ["--config", str(path), "check", "--json"])
        assert result.exit_code == 0, result.output
        rows[managed] = next(
            r for r in json.loads(result.output) if r["check"] == "LMS adapter moodle"
        )
    assert "every cohort on the site" in rows[""]["warning"]
    assert "warning" not in rows['moodle_managed_cohorts = ["staff"]\n']


def test_a_call_ends_with_the_logins_lms_budget(moodle: FakeMoodle) -> None:
    # The adapter's own timeout is 10 s; the login has half a second of budget left.
    lms = MoodleLms(moodle.base_url, moodle.token, timeout=10.0)
    moodle.delay_next(3.0)
    began = time.monotonic()
    with lms_deadline(began + 0.5), pytest.raises(LmsUnavailable, match="no answer within 0"):
        lms.find(ADA.external_id)
    assert time.monotonic() - began < 2.5  # the budget ended it, not the 10 s timeout
    with lms_deadline(time.monotonic() - 1), pytest.raises(LmsUnavailable, match="budget"):
        lms.find(ADA.external_id)


def test_a_body_that_stops_coming_is_reported_as_no_answer() -> None:
    # Headers at once, then silence: the read times out inside the body, which requests
    # reports as a connection error; the detail must still say "no answer", not "could
    # not connect" (the troubleshooting table sends those to different causes).
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n["
        )
        time.sleep(2)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    lms = MoodleLms(f"http://127.0.0.1:{port}", "token", timeout=0.5)
    with pytest.raises(LmsUnavailable) as exc:
        lms.find(ADA.external_id)
    assert "no answer within 0.5 s" in str(exc.value)
    thread.join(timeout=5)
    listener.close()
