"""Whole SAML logins against a real IdP (SimpleSAMLphp), landing in the demo LMS.

The IdP runs under php's built-in server (tests/saml_idp); the bridge, the demo
portal and the demo LMS run as in `sso-bridge demo`, with one more connection,
`hr`, that trusts the IdP through its metadata URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from sso_bridge.keyfiles import generate_private_key, self_signed_certificate, write_private_key
from sso_bridge.models import AuditEvent, User
from tests.saml_idp import PASSWORD, USERS, SimpleSamlIdp

from .conftest import Demo, running_demo


def sp_keys(directory: Path) -> tuple[Path, Path]:
    key = generate_private_key("rsa")
    write_private_key(directory / "sp.key", key)
    (directory / "sp.crt").write_bytes(self_signed_certificate(key, "sso-bridge test SP", 30))
    return directory / "sp.key", directory / "sp.crt"


def saml_config(idp: SimpleSamlIdp, key: Path, cert: Path, **options: Any) -> str:
    lines = [
        "[connections.hr]",
        'type = "saml"',
        'display_name = "Acme single sign-on"',
        f'idp_metadata_url = "{idp.metadata_url}"',
        f'sp_key_file = "{key}"',
        f'sp_cert_file = "{cert}"',
    ]
    options.setdefault("allow_unsolicited", True)
    for name, value in options.items():
        lines.append(f"{name} = {toml_value(value)}")
    return "\n" + "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value).replace("'", '"')


class SamlDemo:
    """The demo stack with connection `hr`, registered at the IdP."""

    def __init__(self, demo: Demo, idp: SimpleSamlIdp, cert: Path) -> None:
        self.demo = demo
        self.idp = idp
        self.http = demo.http
        self.entity_id = demo.url("/saml/hr/metadata")
        self.cert = cert

    @property
    def services(self) -> Any:
        return self.demo.bridge.extensions["sso_bridge"]

    def register(self, **options: Any) -> None:
        self.idp.register_sp(
            entity_id=self.entity_id,
            acs_url=self.demo.url("/saml/hr/acs"),
            slo_url=self.demo.url("/saml/hr/slo"),
            sp_cert_pem=self.cert.read_text(),
            **options,
        )

    def sp_initiated(self, user: str, next_path: str | None = None) -> requests.Response:
        """Start at the bridge, sign in at the IdP, post the response to the ACS."""
        params = {"next": next_path} if next_path else None
        start = self.http.get(self.demo.url("/saml/hr/login"), params=params, allow_redirects=False)
        assert start.status_code == 302, start.text
        assert start.headers["Location"].startswith(self.idp.sso_url)
        acs, fields = self.idp.login(self.http, start.headers["Location"], user, PASSWORD)
        assert acs == self.demo.url("/saml/hr/acs")
        return self.http.post(acs, data=fields)

    def idp_initiated(self, user: str, relay_state: str | None = None) -> requests.Response:
        """Start at the IdP (the portal's Training tab), as HR portals do."""
        url = self.idp.idp_initiated_url(self.entity_id, relay_state)
        acs, fields = self.idp.login(self.http, url, user, PASSWORD)
        return self.http.post(acs, data=fields)

    def audit_reasons(self) -> list[str]:
        with self.services.db.session() as session:
            query = select(AuditEvent.reason).where(AuditEvent.event == "login")
            return list(session.scalars(query.order_by(AuditEvent.id)))

    def user(self, email: str | None = None, subject: str | None = None) -> User | None:
        with self.services.db.session() as session:
            query = select(User)
            if email is not None:
                query = query.where(User.email == email)
            users = [
                u
                for u in session.scalars(query)
                if subject is None or any(link.subject == subject for link in u.links)
            ]
            return users[0] if users else None


def field(page: str, name: str) -> str:
    match = re.search(rf'<dd data-field="{name}">(.*?)</dd>', page, re.S)
    assert match, f"no {name} on the page:\n{page[:3000]}"
    return unescape(match.group(1)).strip()


@pytest.fixture
def make_saml_demo(tmp_path: Path, saml_idp: SimpleSamlIdp) -> Iterator[Any]:
    stack: list[Any] = []

    def make(register: dict[str, Any] | None = None, **options: Any) -> SamlDemo:
        key, cert = sp_keys(tmp_path)
        context = running_demo(
            tmp_path / f"demo{len(stack)}", saml_config(saml_idp, key, cert, **options)
        )
        stack.append(context)
        saml = SamlDemo(context.__enter__(), saml_idp, cert)
        saml.register(**(register or {}))
        return saml

    yield make
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture
def saml(make_saml_demo: Any) -> SamlDemo:
    return make_saml_demo()  # type: ignore[no-any-return]


def test_sp_initiated_login_lands_on_the_course_with_the_account(saml: SamlDemo) -> None:
    page = saml.sp_initiated("ada", "/courses/safety-101")
    assert page.status_code == 200, page.text[:2000]
    assert page.url == saml.demo.url("/lms/courses/safety-101")
    assert "Workplace Safety 101" in page.text
    assert field(page.text, "name") == "Ada Lovelace"
    assert field(page.text, "email") == "ada@acme.example"
    assert field(page.text, "employee_id") == "E1001"
    assert field(page.text, "department") == "Engineering"
    assert field(page.text, "location") == "London"
    assert field(page.text, "language") == "en-GB"
    assert field(page.text, "groups") == "engineering, staff"
    assert saml.audit_reasons()[0] == "created"


def test_idp_initiated_login_with_a_deep_link(saml: SamlDemo) -> None:
    page = saml.idp_initiated("ada", "/courses/gdpr-basics")
    assert page.url == saml.demo.url("/lms/courses/gdpr-basics")
    assert field(page.text, "employee_id") == "E1001"


def test_idp_initiated_open_redirect_in_relay_state_is_refused(saml: SamlDemo) -> None:
    page = saml.idp_initiated("ada", "https://evil.example/phish")
    assert page.status_code == 400
    assert "next_not_allowed" in page.text
    assert saml.user(email="ada@acme.example") is None


def test_idp_initiated_is_refused_unless_allowed(make_saml_demo: Any) -> None:
    saml = make_saml_demo(allow_unsolicited=False)
    page = saml.idp_initiated("ada", "/courses/gdpr-basics")
    assert page.status_code == 400
    assert "saml_unsolicited" in page.text
    assert saml.audit_reasons() == ["saml_unsolicited"]


def test_a_returning_user_is_updated_not_duplicated(saml: SamlDemo) -> None:
    saml.sp_initiated("ada")
    saml.idp.set_user("ada", {**USERS["ada"], "department": ["Research"]})
    # A new browser: the IdP's session would otherwise replay the attributes it cached.
    saml.http = requests.Session()
    try:
        page = saml.idp_initiated("ada")
    finally:
        saml.idp.set_user("ada", USERS["ada"])
    assert field(page.text, "department") == "Research"
    assert saml.audit_reasons()[-1] == "updated"


def test_a_user_without_mail(saml: SamlDemo) -> None:
    page = saml.sp_initiated("nomail")
    assert page.status_code == 200
    assert saml.user(subject="E1003") is not None


def test_a_required_attribute_that_is_missing_is_named(make_saml_demo: Any) -> None:
    saml = make_saml_demo(required_attributes=["email"])
    page = saml.sp_initiated("nomail")
    assert page.status_code == 400
    assert "attribute_missing" in page.text
    assert "“mail”" in page.text  # the page tells the admin what to release
    assert saml.user(subject="E1003") is None


def test_utf8_names_round_trip(saml: SamlDemo) -> None:
    page = saml.sp_initiated("zoe")
    assert field(page.text, "name") == "Zoë Ørsted-Ünal 佐藤"


def test_a_leaver_is_refused(make_saml_demo: Any) -> None:
    # The test IdP's directory keeps the status in employeeType, so it is mapped by hand
    # (it is not a default name: elsewhere it says Employee or Contractor).
    saml = make_saml_demo(attributes={"employment_status": "employeeType"})
    page = saml.sp_initiated("leaver")
    assert page.status_code == 403
    assert "user_blocked" in page.text


def test_encrypted_assertions(make_saml_demo: Any) -> None:
    saml = make_saml_demo(register={"encrypt_assertion": True}, want_assertions_encrypted=True)
    page = saml.sp_initiated("ada")
    assert field(page.text, "employee_id") == "E1001"


def test_unencrypted_assertions_are_refused_when_encryption_is_required(
    make_saml_demo: Any,
) -> None:
    saml = make_saml_demo(want_assertions_encrypted=True)
    page = saml.sp_initiated("ada")
    assert page.status_code == 400
    assert "saml_not_encrypted" in page.text


def test_sp_initiated_single_logout(saml: SamlDemo) -> None:
    saml.sp_initiated("ada")
    start = saml.http.get(saml.demo.url("/logout"), allow_redirects=False)
    assert start.status_code == 302
    assert start.headers["Location"].startswith(saml.idp.slo_url)
    endpoint, params = saml.idp.logout(saml.http, start.headers["Location"])
    assert endpoint == saml.demo.url("/saml/hr/slo")
    done = saml.http.get(endpoint, params=params)
    assert "signed out" in done.text
    # The bridge session is over: the LMS's next sign-in attempt is not answered silently.
    again = saml.http.get(saml.demo.url("/login"), allow_redirects=False)
    assert "/saml/hr/login" in again.headers.get("Location", "") or again.status_code == 200


def test_idp_initiated_single_logout(saml: SamlDemo) -> None:
    saml.sp_initiated("ada")
    sid = saml.http.cookies.get("sso_bridge_session")
    assert saml.services.sessions.get(sid) is not None
    url = saml.idp.idp_initiated_logout_url(saml.demo.url("/logout-done"))
    endpoint, fields, _ = saml.idp.follow(saml.http, url)
    assert endpoint == saml.demo.url("/saml/hr/slo")
    answer = saml.http.get(endpoint, params=fields, allow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith(saml.idp.slo_url)
    assert saml.services.sessions.get(sid) is None


def test_idp_key_rollover(saml: SamlDemo) -> None:
    connector = saml.services.connectors["hr"]
    saml.idp.stage_key()  # the new cert is published next to the old one
    assert connector._metadata.refresh()
    saml.idp.rotate_key()  # and now signs
    try:
        page = saml.sp_initiated("ada")
        assert field(page.text, "employee_id") == "E1001"
    finally:
        assert connector._metadata.refresh()


def test_metadata_url_down_uses_the_last_good_copy(saml: SamlDemo, tmp_path: Path) -> None:
    from sso_bridge.connectors.saml_metadata import IdpMetadata
    from sso_bridge.settings import SamlConnection

    settings = saml.services.settings.connections["hr"]
    assert isinstance(settings, SamlConnection)
    broken = settings.model_copy(update={"idp_metadata_url": settings.idp_metadata_url + "x"})
    var_dir = saml.services.settings.var_dir
    # Saved by the running connector for its own URL; the broken URL may not use it...
    assert IdpMetadata("hr", broken, var_dir).source == "none"
    # ... but the same URL, failing now, falls back to it.
    down = IdpMetadata("hr", settings, var_dir, http=_FailingSession())
    assert down.source == "saved copy"
    assert down.current()["entityId"] == saml.idp.entity_id


class _FailingSession(requests.Session):
    def get(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise requests.ConnectionError("the IdP's web server is down")


def test_sp_metadata_is_published_and_signed(saml: SamlDemo) -> None:
    response = saml.http.get(saml.entity_id)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/samlmetadata+xml")
    assert saml.demo.url("/saml/hr/acs") in response.text
    assert "<ds:Signature" in response.text
