"""handoff_url: where a signed-in person is sent to reach a page of the LMS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from sso_bridge.errors import NextNotAllowed
from sso_bridge.handoff import handoff_url
from sso_bridge.redirects import safe_next
from sso_bridge.settings import Settings
from tests.conftest import CLIENT_SECRET, LMS_URL, Keys, build_app

MOODLE = "https://learn.example.com"


def moodle(make_settings: Callable[..., Settings], login: str, **client: Any) -> Settings:
    return make_settings(
        lms={
            "type": "moodle",
            "base_url": MOODLE,
            "api_url": MOODLE,
            "api_token": "t" * 32,
            "moodle_login": login,
        },
        provider={
            "clients": [
                {
                    "client_id": "lms",
                    "client_secret": CLIENT_SECRET,
                    "redirect_uris": [f"{MOODLE}/auth/oidc/"],
                    **client,
                }
            ]
        },
    )


@pytest.mark.parametrize("path", ["", "/", "/index.php"])
def test_moodle_oidc_sends_the_front_page_to_auth_oidc(
    make_settings: Callable[..., Settings], path: str
) -> None:
    settings = moodle(make_settings, "oidc")
    assert handoff_url(settings, MOODLE + path) == f"{MOODLE}/auth/oidc/"


@pytest.mark.parametrize(
    "target",
    [
        f"{MOODLE}/course/view.php?id=2",
        f"{MOODLE}/?redirect=0",
        f"{MOODLE}/index.php?x=1",
        "https://cdn.example.com/",  # an allow-listed host's root is not Moodle's front page
    ],
)
def test_moodle_oidc_sends_other_pages_straight_there(
    make_settings: Callable[..., Settings], target: str
) -> None:
    assert handoff_url(moodle(make_settings, "oidc"), target) == target


def test_moodle_userkey_is_not_redirected(make_settings: Callable[..., Settings]) -> None:
    # auth_userkey's own login URL does the handoff; this is only the fallback.
    assert handoff_url(moodle(make_settings, "userkey"), MOODLE + "/") == MOODLE + "/"


def test_a_registered_initiate_login_uri_wins(make_settings: Callable[..., Settings]) -> None:
    settings = moodle(make_settings, "oidc", initiate_login_uri=f"{MOODLE}/start")
    assert handoff_url(settings, MOODLE + "/").startswith(f"{MOODLE}/start?iss=")


def test_the_builtin_lms_goes_to_its_initiate_login_uri(
    make_settings: Callable[..., Settings],
) -> None:
    url = handoff_url(make_settings(), LMS_URL + "/")
    assert url.startswith(f"{LMS_URL}/login?iss=")


# -- targets that only look like the LMS --------------------------------------------------------

LOOKALIKES = [
    f"{MOODLE}.evil.com/",
    f"{MOODLE}.evil.com",
    f"{MOODLE}.evil.com/index.php",
    f"{MOODLE}@evil.com/",
    f"{MOODLE}:443@evil.com/",
]


@pytest.mark.parametrize("target", LOOKALIKES)
def test_a_host_that_only_shares_the_lms_prefix_is_never_the_lms(
    make_settings: Callable[..., Settings], target: str
) -> None:
    settings = moodle(make_settings, "oidc")
    # handoff_url matches the base URL as a string prefix: it must not take the rest for a
    # front-page path and send the person to an auth_oidc that is not Moodle's...
    assert handoff_url(settings, target) == target
    # ...and such a target never gets that far: the open-redirect guard refuses it.
    with pytest.raises(NextNotAllowed):
        safe_next(target, settings.lms.base_url, settings.lms.allowed_hosts)


@pytest.mark.parametrize(
    "target",
    [
        "https://LEARN.example.com/",
        "https://Learn.Example.COM/index.php",
        "HTTPS://learn.example.com/",
        "https://LEARN.example.com/course/view.php?id=2",
    ],
)
def test_a_host_in_other_letter_case_stays_on_the_lms(
    make_settings: Callable[..., Settings], target: str
) -> None:
    settings = moodle(make_settings, "oidc")
    allowed = safe_next(target, settings.lms.base_url, settings.lms.allowed_hosts)
    # The same host whatever its case: the front page goes to Moodle's own auth_oidc (or
    # the person would land signed out), any other page to itself.
    front = urlsplit(target).path in ("/", "/index.php")
    assert handoff_url(settings, allowed) == (f"{MOODLE}/auth/oidc/" if front else allowed)


@pytest.mark.parametrize("target", [*LOOKALIKES, "https://LEARN.example.com.evil.com/"])
def test_the_login_page_sends_a_lookalike_nowhere(
    make_settings: Callable[..., Settings], keys: Keys, target: str
) -> None:
    # The same through /login with a live bridge session, the way a signed-in person is
    # handed off: refused, with no redirect at all.
    data = moodle(make_settings, "oidc").model_dump()
    data["provider"]["signing_key_files"] = [keys.provider]
    app = build_app(Settings.model_validate(data))
    try:
        services = app.extensions["sso_bridge"]
        session = services.sessions.create(1, "public-id", "portal", "E1001")
        client = app.test_client()
        client.set_cookie(services.settings.session_cookie, session.sid)
        response = client.get("/login", query_string={"next": target})
        assert response.status_code == 400
        assert "Location" not in response.headers
        # The guard works: a real page of the LMS is handed off.
        ok = client.get("/login", query_string={"next": f"{MOODLE}/course/view.php?id=2"})
        assert (ok.status_code, ok.headers["Location"]) == (303, f"{MOODLE}/course/view.php?id=2")
    finally:
        services.close()
