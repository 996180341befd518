"""Whole OpenID Connect logins against a real provider (oidc-provider under Node).

The demo stack (bridge, demo LMS) gets a connection `corp` to the provider; a
second connection, `partner`, to another provider, shows two side by side.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.oidc_op import OidcProvider
from tests.oidc_rogue import CLIENT_ID as PARTNER_CLIENT
from tests.oidc_rogue import CLIENT_SECRET as PARTNER_SECRET
from tests.oidc_rogue import RogueProvider

from .conftest import Demo, running_demo

SECRET = secrets.token_urlsafe(32)


def field(page: str, name: str) -> str:
    match = re.search(rf'<dd data-field="{name}">(.*?)</dd>', page, re.S)
    assert match, f"no {name} on the page:\n{page[:3000]}"
    return unescape(match.group(1)).strip()


class Stack:
    def __init__(self, demo: Demo, op: OidcProvider, partner: RogueProvider) -> None:
        self.demo = demo
        self.op = op
        self.partner = partner
        self.http = demo.http

    def login(self, username: str, next_path: str | None = None) -> requests.Response:
        params = {"next": next_path} if next_path else None
        start = self.http.get(
            self.demo.url("/oidc/corp/login"), params=params, allow_redirects=False
        )
        assert start.status_code == 302, start.text[:1000]
        callback = self.op.login(self.http, start.headers["Location"], username)
        return self.http.get(callback)


@pytest.fixture
def stack(tmp_path: Path, oidc_op: OidcProvider) -> Iterator[Stack]:
    client_id = f"bridge-{secrets.token_hex(4)}"
    with RogueProvider() as partner:
        config = f"""
[connections.corp]
type = "oidc"
display_name = "Acme Corp"
issuer = "{oidc_op.issuer}"
client_id = "{client_id}"
client_secret = "{SECRET}"
scopes = ["openid", "profile", "email", "employee", "groups"]

[connections.partner]
type = "oidc"
display_name = "Partner"
issuer = "{partner.issuer}"
client_id = "{PARTNER_CLIENT}"
client_secret = "{PARTNER_SECRET}"
"""
        with running_demo(tmp_path / "stack", config) as demo:
            # The redirect URIs name the demo's port, known once it runs.
            oidc_op.add_client(
                client_id,
                client_secret=SECRET,
                redirect_uris=[demo.url("/oidc/corp/callback")],
                post_logout_redirect_uris=[demo.url("/logout")],
            )
            yield Stack(demo, oidc_op, partner)
            oidc_op.remove_client(client_id)


def test_a_login_lands_on_the_course_with_the_account(stack: Stack) -> None:
    page = stack.login("ada", "/courses/safety-101")
    assert page.status_code == 200, page.text[:2000]
    assert page.url == stack.demo.url("/lms/courses/safety-101")
    # The ID token carries only sub (the provider's default): the profile came from
    # userinfo, merged because its sub is the ID token's.
    assert field(page.text, "name") == "Ada Lovelace"
    assert field(page.text, "email") == "ada@acme.example"
    assert field(page.text, "department") == "Engineering"
    assert field(page.text, "employee_id") == "00u-ada-1001"
    assert field(page.text, "groups") == "engineering, staff"


def test_utf8_names(stack: Stack) -> None:
    assert field(stack.login("zoe").text, "name") == "Zoë Ørsted-Ünal 佐藤"


def test_a_key_rotation_at_the_provider(stack: Stack) -> None:
    assert stack.login("ada").status_code == 200
    stack.op.rotate_key("RS256")
    # A new browser, so the provider signs a new ID token with the new key.
    stack.http = requests.Session()
    stack.http.trust_env = False
    assert field(stack.login("ada").text, "department") == "Engineering"


def test_two_connections_side_by_side(stack: Stack) -> None:
    assert stack.login("ada").status_code == 200
    other = requests.Session()
    other.trust_env = False
    start = other.get(stack.demo.url("/oidc/partner/login"), allow_redirects=False)
    callback = stack.partner.login(start.headers["Location"])
    page = other.get(callback)
    assert page.status_code == 200, page.text[:1000]
    services: Any = stack.demo.bridge.extensions["sso_bridge"]
    from sqlalchemy import select

    from sso_bridge.models import IdentityLink

    with services.db.session() as session:
        links = {(link.connection, link.subject) for link in session.scalars(select(IdentityLink))}
    assert ("corp", "00u-ada-1001") in links
    assert ("partner", "E1001") in links


def test_rp_initiated_logout(stack: Stack) -> None:
    assert stack.login("ada").status_code == 200
    start = stack.http.get(stack.demo.url("/logout"), allow_redirects=False)
    assert start.status_code == 302
    assert start.headers["Location"].startswith(stack.op.issuer)
    assert "id_token_hint=" in start.headers["Location"]
    back = stack.op.logout(stack.http, start.headers["Location"])
    assert back.startswith(stack.demo.url("/logout"))
    assert "signed out" in stack.http.get(back).text
