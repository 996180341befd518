"""The same login and provisioning cases through every LMS adapter.

`builtin` keeps accounts in the bridge's database; `scim` talks to a real
scim2-server; `moodle` to a fake Moodle built from Moodle's documented web-service
API (Moodle cannot run here: tests/fake_moodle.py says what it reproduces).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from sso_bridge.models import User
from sso_bridge.settings import Settings
from tests.conftest import Minter, build_app
from tests.fake_moodle import FakeMoodle
from tests.forward_proxy import ForwardProxy

RULES = [
    {
        "name": "engineers",
        "when": {"department": ["Engineering"]},
        "groups": ["cohort-eng"],
        "courses": ["SAFETY"],
    },
    {"name": "everyone", "groups": ["staff"]},
]


@dataclass
class Lms:
    """One LMS under test, and how to look into it."""

    kind: str
    settings: dict[str, Any]
    accounts: Callable[[str], int]
    groups_of: Callable[[str], set[str]]
    courses_of: Callable[[str], set[str]] | None
    direct_login: bool
    fail_next: Callable[[int], None] | None
    suspended: Callable[[str], bool] | None = None
    slow_create: Callable[[float], None] | None = None
    """Make the next account create happen, but answer only after this many seconds."""


@pytest.fixture(params=["builtin", "scim", "moodle"])
def lms(request: pytest.FixtureRequest) -> Iterator[Lms]:
    if request.param == "builtin":
        yield Lms("builtin", {}, lambda _: -1, lambda _: set(), None, False, None)
    elif request.param == "scim":
        server = request.getfixturevalue("scim_server")

        def scim_groups(external_id: str) -> set[str]:
            user = server.users(external_id)[0]
            return {
                g["displayName"]
                for g in server.groups()
                if any(m.get("value") == user["id"] for m in g.get("members", []))
            }

        yield Lms(
            "scim",
            {"type": "scim", "api_url": server.url, "api_token": server.token, "timeout": 2},
            lambda external_id: len(server.users(external_id)),
            scim_groups,
            None,
            False,
            lambda n: server.fail_next(n, status=503),
            lambda external_id: server.users(external_id)[0].get("active") is False,
            lambda seconds: server.delay_next(seconds, method="POST", path="/Users"),
        )
        server.clear_faults()
    else:
        with FakeMoodle() as moodle:
            moodle.add_course("SAFETY", "Safety at work")

            def moodle_user(external_id: str) -> int:
                return int(moodle.users_with_idnumber(external_id)[0]["id"])

            yield Lms(
                "moodle",
                {
                    "type": "moodle",
                    # People use the site where its API is: the LMS's base URL is Moodle's.
                    "base_url": moodle.base_url,
                    "api_url": moodle.base_url,
                    "api_token": moodle.token,
                    "timeout": 2,
                },
                lambda external_id: len(moodle.users_with_idnumber(external_id)),
                lambda external_id: moodle.cohorts_of(moodle_user(external_id)),
                lambda external_id: moodle.courses_of(moodle_user(external_id)),
                True,
                lambda n: moodle.fail_next(n, status=503),
                lambda external_id: moodle.users_with_idnumber(external_id)[0]["suspended"] == 1,
                lambda seconds: moodle.delay_next(seconds, "core_user_create_users"),
            )
            moodle.check()


def lms_settings(lms: Lms, make_settings: Callable[..., Settings], **top: Any) -> Settings:
    settings = make_settings(rules=RULES, **top)
    if lms.settings:
        settings = settings.model_copy(update={"lms": settings.lms.model_copy(update=lms.settings)})
        settings = Settings.model_validate(settings.model_dump())
    return settings


def moodle_settings(
    make_settings: Callable[..., Settings], moodle: FakeMoodle, rules: Any, **lms: Any
) -> Settings:
    """Settings with the moodle adapter on the fake ``moodle`` (and ``lms`` overrides)."""
    settings = make_settings(rules=rules)
    update = {"type": "moodle", "api_url": moodle.base_url, "api_token": moodle.token, **lms}
    return Settings.model_validate(
        settings.model_copy(update={"lms": settings.lms.model_copy(update=update)}).model_dump()
    )


@pytest.fixture
def app(lms: Lms, make_settings: Callable[..., Settings]) -> Any:
    application = build_app(lms_settings(lms, make_settings))
    yield application
    application.extensions["sso_bridge"].close()


def public_id(app: Any) -> str:
    with app.extensions["sso_bridge"].db.session() as session:
        return str(session.scalars(select(User.public_id)).one())


def person(mint: Minter, subject: str, **claims: Any) -> str:
    # Each test its own e-mail: the SCIM server is shared, and LMSs key userName on it.
    return mint(sub=subject, email=f"{subject.lower()}@example.com", **claims)


def login(app: Any, token: str) -> Any:
    return app.test_client().post("/token/acme", data={"token": token, "next": "/courses/x"})


def test_create_update_groups_and_handoff(app: Any, lms: Lms, mint: Minter) -> None:
    subject = f"E{uuid.uuid4().hex[:8]}"
    first = login(app, person(mint, subject))
    assert first.status_code == 303, first.get_data(as_text=True)[:500]
    external_id = public_id(app)
    location = first.headers["Location"]
    if lms.direct_login:
        # Moodle's auth_userkey: a one-time login URL that lands on the deep link.
        assert "/auth/userkey/login.php?key=" in location
        assert parse_qs(urlsplit(location).query)["wantsurl"][0].endswith("/courses/x")
    else:
        assert "/lms/login?" in location  # the OpenID Provider handoff
    if lms.kind != "builtin":
        assert lms.accounts(external_id) == 1
        assert lms.groups_of(external_id) == {"cohort-eng", "staff"}
        if lms.courses_of is not None:
            assert lms.courses_of(external_id) == {"SAFETY"}
    moved = login(app, person(mint, subject, department="Sales"))
    assert moved.status_code == 303
    if lms.kind != "builtin":
        assert lms.accounts(external_id) == 1
        assert lms.groups_of(external_id) == {"staff"}
        if lms.courses_of is not None:
            assert lms.courses_of(external_id) == set()


def test_a_leaver_is_refused_and_suspended_and_comes_back_when_rehired(
    app: Any, lms: Lms, mint: Minter
) -> None:
    subject = f"E{uuid.uuid4().hex[:8]}"
    assert login(app, person(mint, subject)).status_code == 303
    external_id = public_id(app)

    left = login(app, person(mint, subject, employment_status="terminated"))

    assert left.status_code == 403
    if lms.suspended is not None:
        assert lms.suspended(external_id)
    back = login(app, person(mint, subject, employment_status="active"))
    assert back.status_code == 303
    if lms.suspended is not None:
        assert not lms.suspended(external_id)
        assert lms.accounts(external_id) == 1


def test_a_create_that_timed_out_is_found_not_made_again(
    lms: Lms, make_settings: Callable[..., Settings], mint: Minter
) -> None:
    if lms.slow_create is None:
        pytest.skip("the builtin LMS makes no network call to time out")
    settings = lms_settings(lms, make_settings)
    settings = Settings.model_validate(
        {**settings.model_dump(), "lms": {**settings.lms.model_dump(), "timeout": 0.5}}
    )
    application = build_app(settings)
    try:
        lms.slow_create(2.0)  # made in the LMS, answered after the bridge gave up

        response = login(application, person(mint, f"E{uuid.uuid4().hex[:8]}"))

        # The retry within the same login looks the account up first and finds it.
        assert response.status_code == 303, response.get_data(as_text=True)[:500]
        assert lms.accounts(public_id(application)) == 1
        calls = application.extensions["sso_bridge"].audit.tail(1)[0]["detail"]["lms_calls"]
        assert {"call": "create", "outcome": "ok", "attempts": 2} in calls
    finally:
        application.extensions["sso_bridge"].close()


def test_a_flaky_lms_makes_no_duplicates_and_every_login_completes(
    app: Any, lms: Lms, mint: Minter
) -> None:
    if lms.fail_next is None:
        pytest.skip("the builtin LMS has no network to fail")  # covered in test_provisioning
    subject = f"E{uuid.uuid4().hex[:8]}"
    outcomes = []
    for attempt in range(6):
        # Every other attempt meets an LMS that fails its next calls (503).
        if attempt % 2 == 0:
            lms.fail_next(3)
        outcomes.append(login(app, person(mint, subject)).status_code)
    assert 303 in outcomes
    assert set(outcomes) <= {303, 503}
    assert lms.accounts(public_id(app)) == 1


def test_concurrent_first_logins_make_one_account(app: Any, lms: Lms, mint: Minter) -> None:
    subject = f"E{uuid.uuid4().hex[:8]}"
    tokens = [person(mint, subject) for _ in range(50)]
    results: list[int] = []
    barrier = threading.Barrier(len(tokens))

    def one(token: str) -> None:
        barrier.wait()
        results.append(login(app, token).status_code)

    threads = [threading.Thread(target=one, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(303) == len(tokens)
    with app.extensions["sso_bridge"].db.session() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1
    if lms.kind != "builtin":
        assert lms.accounts(public_id(app)) == 1


def test_the_audit_events_name_each_lms_call_and_its_outcome(
    app: Any, lms: Lms, mint: Minter
) -> None:
    subject = f"E{uuid.uuid4().hex[:8]}"
    audit = app.extensions["sso_bridge"].audit
    if lms.fail_next is not None:
        lms.fail_next(3)  # the first call fails three times: the login is refused
        assert login(app, person(mint, subject)).status_code == 503
        refused = audit.tail(1)[0]
        assert (refused["outcome"], refused["reason"]) == ("failure", "lms_unavailable")
        assert refused["detail"]["lms_calls"] == [
            {"call": "find", "outcome": "lms_unavailable", "attempts": 3}
        ]
    assert login(app, person(mint, subject)).status_code == 303
    done = audit.tail(1)[0]
    calls = done["detail"]["lms_calls"]
    assert calls[0] == {"call": "find", "outcome": "ok", "attempts": 1}
    assert {"call": "add group staff", "outcome": "ok", "attempts": 1} in calls
    assert all(call["outcome"] == "ok" for call in calls)


def test_a_rule_naming_a_course_moodle_lacks_is_skipped_not_fatal(
    make_settings: Callable[..., Settings], mint: Minter
) -> None:
    with FakeMoodle() as moodle:
        moodle.add_course("SAFETY", "Safety at work")
        rules = [{"name": "typo", "courses": ["SAFETY", "SAFTEY"], "groups": ["staff"]}]
        application = build_app(
            moodle_settings(make_settings, moodle, rules, base_url=moodle.base_url)
        )
        try:
            response = login(application, person(mint, "E-typo"))
            assert response.status_code == 303, response.get_data(as_text=True)[:300]
            user_id = int(moodle.users_with_idnumber(public_id(application))[0]["id"])
            assert moodle.courses_of(user_id) == {"SAFETY"}
            assert moodle.cohorts_of(user_id) == {"staff"}
            event = application.extensions["sso_bridge"].audit.tail(1)[0]
            assert "course skipped, not in the LMS: SAFTEY" in event["detail"]["lms"]
        finally:
            application.extensions["sso_bridge"].close()
        moodle.check()


def test_the_lms_is_reached_through_the_outbound_proxy(
    lms: Lms, make_settings: Callable[..., Settings], mint: Minter
) -> None:
    if lms.kind == "builtin":
        pytest.skip("the builtin LMS is the bridge's own database")
    with ForwardProxy() as proxy:
        application = build_app(lms_settings(lms, make_settings, outbound_proxy=proxy.url))
        try:
            response = login(application, person(mint, f"E{uuid.uuid4().hex[:8]}"))
        finally:
            application.extensions["sso_bridge"].close()
        assert response.status_code == 303, response.get_data(as_text=True)[:500]
        assert proxy.seen, "the LMS API was called directly"
        assert all(f" {lms.settings['api_url']}/" in line for line in proxy.seen)


def test_a_moodle_login_url_off_the_lms_host_is_refused(
    make_settings: Callable[..., Settings], mint: Minter
) -> None:
    # auth_userkey's URL carries a one-time login key: it goes only where deep links may.
    with FakeMoodle() as moodle:
        # lms.base_url stays the default: not the Moodle site.
        application = build_app(moodle_settings(make_settings, moodle, RULES))
        try:
            response = login(application, person(mint, f"E{uuid.uuid4().hex[:8]}"))
            assert response.status_code == 502
            assert "Location" not in response.headers
            assert "Set-Cookie" not in response.headers  # no bridge session either
            event = application.extensions["sso_bridge"].audit.tail(1)[0]
            assert event["reason"] == "lms_login_url_refused"
            assert "login URL is not on lms.base_url's host" in event["detail"]["message"]
        finally:
            application.extensions["sso_bridge"].close()
        moodle.check()
