"""handoff_url: where a signed-in person is sent to reach a page of the LMS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sso_bridge.handoff import handoff_url
from sso_bridge.settings import Settings
from tests.conftest import CLIENT_SECRET, LMS_URL

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
