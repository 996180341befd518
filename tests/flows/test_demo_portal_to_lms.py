"""The demo end to end, over real HTTP: portal → signed token → bridge → OIDC → demo LMS."""

from __future__ import annotations

import re
import stat
from html import unescape
from html.parser import HTMLParser

import pytest
import requests

from sso_bridge.demo import build_demo_app

from .conftest import HOST, Demo


class _Forms(HTMLParser):
    """Every form on a page: its action and its named input values."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, object]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self.forms.append(
                {"id": values.get("id"), "action": values.get("action"), "fields": {}}
            )
        elif tag == "input" and self.forms and values.get("name"):
            fields = self.forms[-1]["fields"]
            assert isinstance(fields, dict)
            fields[values["name"]] = values.get("value") or ""


def _form(
    html: str, form_id: str | None = None, action_ends: str | None = None
) -> tuple[str, dict[str, str]]:
    parser = _Forms()
    parser.feed(html)
    for form in parser.forms:
        action = str(form["action"])
        if (form_id is None or form["id"] == form_id) and (
            action_ends is None or action.endswith(action_ends)
        ):
            return action, dict(form["fields"])  # type: ignore[call-overload]
    raise AssertionError(f"no such form on the page:\n{html[:2000]}")


def _field(html: str, name: str) -> str:
    """The value the LMS account card shows for one field."""
    match = re.search(rf'<dd data-field="{name}">(.*?)</dd>', html, re.S)
    assert match, f"the account card has no {name}:\n{html[:3000]}"
    return unescape(match.group(1)).strip()


def _sign_in_as(demo: Demo, employee_id: str) -> None:
    page = demo.http.get(demo.url("/portal/"))
    assert page.status_code == 200
    action, fields = _form(page.text, action_ends="/switch")
    fields["employee_id"] = employee_id
    switched = demo.http.post(demo.base + action, data=fields)
    assert switched.status_code == 200


def _launch(demo: Demo, course: str | None = None) -> tuple[str, dict[str, str]]:
    """Open Training (or one course) in the portal: the handoff form it renders."""
    page = demo.http.get(
        demo.url("/portal/training/open"), params={"course": course} if course else None
    )
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert "'unsafe-inline'" not in page.headers["Content-Security-Policy"]
    assert "autosubmit.js" in page.text
    return _form(page.text, form_id="handoff")


def _click_training(demo: Demo, course: str | None = None) -> requests.Response:
    """What the browser does on the handoff page: post the form, follow every redirect."""
    action, fields = _launch(demo, course)
    return demo.http.post(action, data=fields)


def test_training_lands_on_the_lms_with_the_account(demo: Demo) -> None:
    _sign_in_as(demo, "E1001")
    action, fields = _launch(demo)
    assert action == demo.url("/token/acme-hr")
    assert set(fields) == {"token", "next"}
    assert fields["next"] == ""

    page = demo.http.post(action, data=fields)

    assert page.status_code == 200
    assert page.url == demo.url("/lms/")
    assert "Signed in as <strong>Ada Lovelace</strong>" in page.text
    assert _field(page.text, "name") == "Ada Lovelace"
    assert _field(page.text, "email") == "ada.lovelace@acme.example"
    assert _field(page.text, "employee_id") == "E1001"
    assert _field(page.text, "department") == "Engineering"
    assert _field(page.text, "location") == "London"
    assert _field(page.text, "language") == "en-GB"
    assert _field(page.text, "manager") == "E1002"
    assert _field(page.text, "job_title") == "Principal Engineer"
    assert _field(page.text, "groups") == "engineering, staff"
    # The LMS keeps its own session, on its own path.
    cookie = next(c for c in demo.http.cookies if c.name == "demo_lms_session")
    assert cookie.path == "/lms"


def test_deep_link_lands_on_the_course(demo: Demo) -> None:
    _sign_in_as(demo, "E1001")
    action, fields = _launch(demo, "safety-101")
    assert fields["next"] == "/courses/safety-101"

    page = demo.http.post(action, data=fields)

    assert page.status_code == 200
    assert page.url == demo.url("/lms/courses/safety-101")
    assert "Workplace Safety 101" in page.text
    assert _field(page.text, "employee_id") == "E1001"


def test_a_changed_department_shows_after_the_next_training_click(demo: Demo) -> None:
    _sign_in_as(demo, "E1001")
    first = _click_training(demo).text
    assert _field(first, "department") == "Engineering"
    # The demo's rules: an engineering cohort and a London site group, safety for all.
    assert _field(first, "lms_groups") == "cohort-engineering, site-london"
    assert _field(first, "courses") == "gdpr-basics, safety-101"

    profile = demo.http.get(demo.url("/portal/profile"))
    action, fields = _form(profile.text, action_ends="/profile")
    fields.update(department="Data Science", location="Cambridge")
    saved = demo.http.post(demo.base + action, data=fields)
    assert saved.status_code == 200
    assert 'value="Data Science"' in saved.text

    page = _click_training(demo)
    assert page.url == demo.url("/lms/")
    assert _field(page.text, "department") == "Data Science"
    assert _field(page.text, "location") == "Cambridge"
    # The rules took away what they had granted and no longer grant.
    assert _field(page.text, "lms_groups") == "\u2013"  # the card shows a dash
    assert _field(page.text, "courses") == "safety-101"


def test_switching_people_in_the_portal_switches_the_lms_account(demo: Demo) -> None:
    _sign_in_as(demo, "E1001")
    assert _field(_click_training(demo).text, "employee_id") == "E1001"
    _sign_in_as(demo, "E1002")

    page = _click_training(demo)

    assert _field(page.text, "employee_id") == "E1002"
    assert _field(page.text, "language") == "de-DE"
    assert _field(page.text, "location") == "Berlin"


def test_a_leaver_is_refused_with_a_reference(demo: Demo) -> None:
    _sign_in_as(demo, "E1004")

    page = _click_training(demo)

    assert page.status_code == 403
    assert page.url == demo.url("/token/acme-hr")
    text = re.sub(r"<[^>]+>", " ", page.text)
    match = re.search(r"Reference:\s*([0-9a-f]{8,})", text)
    assert match, text
    assert match.group(1) == page.headers["X-Correlation-ID"]
    assert "not allowed to use the learning platform" in page.text
    # No LMS session came of it: the LMS sends the browser back to the bridge to sign in.
    lms = demo.http.get(demo.url("/lms/"), allow_redirects=False)
    assert lms.status_code == 302
    assert lms.headers["Location"].startswith(demo.url("/oauth2/authorize?"))


def test_a_replayed_token_is_refused(demo: Demo) -> None:
    _sign_in_as(demo, "E1001")
    action, fields = _launch(demo)
    first = demo.http.post(action, data=fields)
    assert first.url == demo.url("/lms/")

    second = demo.http.post(action, data=fields)

    assert second.status_code == 400
    assert second.url == demo.url("/token/acme-hr")
    assert "already used" in second.text
    assert "Reference:" in second.text


def test_the_portal_refuses_a_post_without_its_csrf_token(demo: Demo) -> None:
    _sign_in_as(demo, "E1001")

    forged = demo.http.post(
        demo.url("/portal/profile"), data={"department": "Evil", "location": "Nowhere"}
    )

    assert forged.status_code == 400
    profile = demo.http.get(demo.url("/portal/profile"))
    assert 'value="Engineering"' in profile.text


@pytest.mark.parametrize(
    ("iss", "target"),
    [
        ("http://evil.example", "{base}/lms/"),
        ("{base}/", "{base}/lms/"),
        ("{base}", "http://evil.example/lms/"),
        ("{base}", "{base}/lmsx/"),
        ("{base}", "{base}/portal/"),
        ("{base}", "{base}/lms/../portal/"),
        ("{base}", "{base}/lms/%2e%2e/portal/"),
        ("{base}", "{base}/lms\\..\\portal/"),
    ],
)
def test_lms_third_party_login_checks_iss_and_target(demo: Demo, iss: str, target: str) -> None:
    response = demo.http.get(
        demo.url("/lms/login"),
        params={
            "iss": iss.format(base=demo.base),
            "target_link_uri": target.format(base=demo.base),
        },
        allow_redirects=False,
    )
    assert response.status_code == 400


def test_lms_third_party_login_starts_a_pkce_authorization_request(demo: Demo) -> None:
    response = demo.http.get(
        demo.url("/lms/login"),
        params={"iss": demo.base, "target_link_uri": demo.url("/lms/courses/leadership")},
        allow_redirects=False,
    )
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(demo.url("/oauth2/authorize?"))
    for part in (
        "client_id=demo-lms",
        "code_challenge_method=S256",
        "nonce=",
        "state=",
        "scope=openid+profile+email+employee+groups",
    ):
        assert part in location


def test_key_material_is_private_and_reused(demo: Demo) -> None:
    files = sorted(p for p in demo.var_dir.iterdir() if not p.name.startswith("sso-bridge.db"))
    assert {p.name for p in files} >= {
        "portal-ed25519.pem",
        "portal-ed25519.pub.pem",
        "provider-rsa.pem",
        "lms-client-secret",
        "portal-flask-secret",
        "lms-flask-secret",
    }
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert len((demo.var_dir / "lms-client-secret").read_text().strip()) == 48
    # demo.toml is written anew on every start (the port may change); the keys are not.
    before = {p.name: p.read_bytes() for p in files if p.name != "demo.toml"}

    build_demo_app(HOST, 8000, demo.var_dir)

    assert {p.name: p.read_bytes() for p in files if p.name != "demo.toml"} == before


def test_lms_callback_without_its_state_is_refused(demo: Demo) -> None:
    response = demo.http.get(demo.url("/lms/callback"), params={"code": "x", "state": "y"})

    assert response.status_code == 400
    assert "could not sign you in" in response.text
    lms = demo.http.get(demo.url("/lms/"), allow_redirects=False)
    assert lms.status_code == 302
    assert lms.headers["Location"].startswith(demo.url("/oauth2/authorize?"))


def test_lms_unknown_course_is_not_found(demo: Demo) -> None:
    response = demo.http.get(demo.url("/lms/courses/no-such-course"), allow_redirects=False)

    assert response.status_code == 404
    assert "no such course" in response.text


def test_the_portal_refuses_a_profile_value_with_control_characters(demo: Demo) -> None:
    _sign_in_as(demo, "E1001")
    profile = demo.http.get(demo.url("/portal/profile"))
    action, fields = _form(profile.text, action_ends="/profile")
    fields.update(department="Engi\x00neering", location="London")

    response = demo.http.post(demo.base + action, data=fields)

    assert response.status_code == 400
    assert "control characters" in response.text
