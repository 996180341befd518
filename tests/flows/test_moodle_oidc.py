"""Into Moodle through the bridge's OpenID Provider (`moodle_login = "oidc"`), end to end.

A portal login provisions the account in the fake Moodle with authentication method
`oidc`; the handoff sends the person to Moodle; Moodle's auth_oidc plugin (simulated
from its source in tests/moodle_oidc_rp.py: no PKCE, a client secret) signs them in
through the bridge and finds that account by its user name.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from sqlalchemy import select

from sso_bridge.models import User
from sso_bridge.settings import Settings
from tests.conftest import BASE_URL, Keys, Minter, build_app
from tests.fake_moodle import LOGIN_PATH, FakeMoodle
from tests.html_forms import form_fields
from tests.moodle_oidc_rp import MoodleOidcPlugin, PluginError

SECRET = "m" * 40


@dataclass
class Site:
    moodle: FakeMoodle
    app: Any
    plugin: MoodleOidcPlugin

    def public_id(self) -> str:
        with self.app.extensions["sso_bridge"].db.session() as session:
            return str(session.scalars(select(User.public_id)).one())


def make_site(
    moodle: FakeMoodle, make_settings: Callable[..., Settings], keys: Keys, **client: Any
) -> Any:
    settings = make_settings(
        lms={
            "type": "moodle",
            "base_url": moodle.base_url,
            "api_url": moodle.base_url,
            "api_token": moodle.token,
            "moodle_login": "oidc",
            "client_id": "moodle",
            "timeout": 2,
        },
        provider={
            "signing_key_files": [keys.provider],
            "clients": [
                {
                    "client_id": "moodle",
                    "client_secret": SECRET,
                    "redirect_uris": [moodle.base_url + "/auth/oidc/"],
                    "scopes": ["openid", "profile", "email"],
                    **client,
                }
            ],
        },
        rules=[{"name": "everyone", "courses": ["SAFETY"]}],
    )
    return build_app(settings)


@pytest.fixture
def site(make_settings: Callable[..., Settings], keys: Keys) -> Iterator[Site]:
    with FakeMoodle() as moodle:
        moodle.add_course("SAFETY", "Safety at work")
        app = make_site(moodle, make_settings, keys, require_pkce=False)
        plugin = MoodleOidcPlugin(moodle, app.test_client(), BASE_URL, "moodle", SECRET)
        yield Site(moodle, app, plugin)
        app.extensions["sso_bridge"].close()
        moodle.check()


def portal_login(site: Site, subject: str, next_path: str | None, mint: Minter) -> tuple[Any, Any]:
    """A portal's token posted by a browser: the browser (with its bridge session) and the
    bridge's answer."""
    browser = site.app.test_client()
    # A mixed-case address: Moodle's user name, and the plugin's match, are lower case.
    token = mint(sub=subject, email=f"{subject}.Lovelace@Example.com")
    form = {"token": token, **({"next": next_path} if next_path else {})}
    return browser, browser.post("/token/acme", data=form)


def sign_in_at_moodle(site: Site, browser: Any, wantsurl: str | None) -> Any:
    """auth_oidc's round trip through the bridge, in the browser that holds the session."""
    authorization = site.plugin.authorization_url(wantsurl)
    answer = browser.get(authorization.removeprefix(BASE_URL))
    # The plugin asks for form_post: the code comes back in a form the browser posts.
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    assert "code=" not in answer.headers.get("Location", "")
    return site.plugin.complete(answer)


def moodle_page(site: Site, url: str, session: str | None = None) -> requests.Response:
    cookies = {"MoodleSession": session} if session else {}
    return requests.get(url, cookies=cookies, allow_redirects=False, timeout=5)


def test_a_deep_link_survives_the_moodle_login(site: Site, mint: Minter) -> None:
    subject = f"E{uuid.uuid4().hex[:8]}"
    course = "/course/view.php?id=2"
    browser, handoff = portal_login(site, subject, course, mint)
    # The person goes straight to the page: auth_oidc has no third-party-initiated login.
    assert handoff.status_code == 303, handoff.get_data(as_text=True)[:500]
    target = site.moodle.base_url + course
    assert handoff.headers["Location"] == target

    [account] = site.moodle.users_with_idnumber(site.public_id())
    assert (account["auth"], account["username"]) == (
        "oidc",
        f"{subject.lower()}.lovelace@example.com",
    )
    assert site.moodle.courses_of(account["id"]) == {"SAFETY"}

    # Moodle: no session, so require_login remembers the page and goes to the login page,
    # which auth_oidc (Force redirect) turns into its own login.
    first = moodle_page(site, target)
    assert (first.status_code, first.headers["Location"]) == (303, LOGIN_PATH)
    login = sign_in_at_moodle(site, browser, wantsurl=target)

    assert login.user["id"] == account["id"]
    assert login.claims["sub"] == site.public_id()
    assert login.claims["email"] == f"{subject}.Lovelace@Example.com"
    assert login.landing == target
    page = moodle_page(site, login.landing, login.session)
    assert page.status_code == 200
    assert (account["username"], course) in site.moodle.pages


def test_without_a_deep_link_the_person_starts_at_auth_oidc(site: Site, mint: Minter) -> None:
    subject = f"E{uuid.uuid4().hex[:8]}"
    browser, handoff = portal_login(site, subject, None, mint)
    # The front page needs no login: going there would leave the person signed out.
    assert handoff.headers["Location"] == site.moodle.base_url + "/auth/oidc/"
    login = sign_in_at_moodle(site, browser, wantsurl=None)
    assert login.landing == site.moodle.base_url + "/"
    assert login.user["idnumber"] == site.public_id()
    # Back at the bridge with the session alive, /login hands off the same way.
    again = browser.get("/login")
    assert again.headers["Location"] == site.moodle.base_url + "/auth/oidc/"


def test_client_secret_basic_works_as_well(site: Site, mint: Minter) -> None:
    browser, _ = portal_login(site, f"E{uuid.uuid4().hex[:8]}", None, mint)
    site.plugin.auth_method = "client_secret_basic"
    assert sign_in_at_moodle(site, browser, None).user["auth"] == "oidc"


def test_the_plugin_fails_while_the_client_still_requires_pkce(
    make_settings: Callable[..., Settings], keys: Keys, mint: Minter
) -> None:
    # What `sso-bridge check` warns about: the default client refuses the plugin.
    with FakeMoodle() as moodle:
        app = make_site(moodle, make_settings, keys)
        site = Site(
            moodle, app, MoodleOidcPlugin(moodle, app.test_client(), BASE_URL, "moodle", SECRET)
        )
        browser, _ = portal_login(site, f"E{uuid.uuid4().hex[:8]}", None, mint)
        answer = browser.get(site.plugin.authorization_url().removeprefix(BASE_URL))
        _, fields = form_fields(answer)  # the error comes back as the plugin asked: posted
        assert fields["error_description"] == (
            "PKCE is required: send code_challenge with method S256."
        )
        with pytest.raises(PluginError) as info:
            site.plugin.complete(answer)
        assert str(info.value) == (
            "errorauthgeneral: PKCE is required: send code_challenge with method S256."
        )
        app.extensions["sso_bridge"].close()
        moodle.check()


def test_an_email_taken_from_another_person_never_reaches_moodle_as_a_claim(
    site: Site, mint: Minter
) -> None:
    # From a review: a person whose upstream e-mail becomes a colleague's logs in again;
    # Moodle refuses the update (the address is taken), and the earlier bridge session
    # must not then hand auth_oidc (which finds accounts by the email claim) that address.
    victim = f"V{uuid.uuid4().hex[:6]}"
    victim_browser = site.app.test_client()
    victim_email = f"{victim.lower()}@example.com"
    assert (
        victim_browser.post("/token/acme", data={"token": mint(sub=victim, email=victim_email)})
    ).status_code == 303
    attacker = f"A{uuid.uuid4().hex[:6]}"
    browser = site.app.test_client()
    first = mint(sub=attacker, email=f"{attacker.lower()}@example.com")
    assert browser.post("/token/acme", data={"token": first}).status_code == 303

    taken = browser.post("/token/acme", data={"token": mint(sub=attacker, email=victim_email)})

    assert taken.status_code == 502, taken.get_data(as_text=True)[:300]
    answer = browser.get(site.plugin.authorization_url().removeprefix(BASE_URL))
    assert answer.status_code != 200 or "code" not in form_fields(answer)[1]
    assert "code=" not in answer.headers.get("Location", "")
    # The attacker's record holds the address, marked as not taken by the LMS: the
    # provider gives such a record no tokens, whatever session asks (test_provider.py).
    with site.app.extensions["sso_bridge"].db.session() as session:
        user = session.scalars(select(User).where(User.email == victim_email.lower())).all()
        assert [u.lms_account_id is None for u in user].count(True) == 1
