"""The bridge as OpenID Provider: the whole code flow, and every refusal, through Flask's client.

The app here is built by hand (services, migrations, provider) so these tests
need nothing but the provider; ID tokens are checked with joserfc against the
JWKS the bridge publishes, as the LMS would.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from flask import Flask
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from sso_bridge.errors import BridgeError
from sso_bridge.models import IdentityLink, OidcClient, User
from sso_bridge.provider import sync_clients
from sso_bridge.provider_keys import ProviderKeyError, ProviderKeys
from sso_bridge.services import Services, build_services
from sso_bridge.settings import Settings
from sso_bridge.web.provider import init_provider
from tests.html_forms import form_fields

BASE = "http://127.0.0.1:5000"
LMS_REDIRECT = f"{BASE}/lms/callback"
OTHER_REDIRECT = f"{BASE}/other/callback"
SPA_REDIRECT = f"{BASE}/spa/callback"
NOPKCE_REDIRECT = f"{BASE}/auth/oidc/"
LMS_SECRET = "L" * 40
OTHER_SECRET = "O" * 40
NOPKCE_SECRET = "N" * 40
ALL_SCOPES = "openid profile email employee groups"


# -- keys and app -----------------------------------------------------------------------------


def write_key(path: Path, kind: str) -> Path:
    """Write a PEM key: rsa, ec (P-256), small-rsa, ed25519, ec-p384, or public (RSA, public)."""
    key: Any
    if kind in ("rsa", "public"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "small-rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    elif kind == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind == "ec-p384":
        key = ec.generate_private_key(ec.SECP384R1())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    if kind == "public":
        data = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    path.write_bytes(data)
    return path


def make_settings(
    tmp_path: Path, key_files: list[Path], store: dict[str, Any] | None = None, **provider: Any
) -> Settings:
    data: dict[str, Any] = {
        "base_url": BASE,
        "var_dir": tmp_path / "var",
        "database": {"url": f"sqlite:///{tmp_path}/bridge.db"},
        "store": store or {},
        "provider": {
            "signing_key_files": key_files,
            "clients": [
                {"client_id": "lms", "client_secret": LMS_SECRET, "redirect_uris": [LMS_REDIRECT]},
                {
                    "client_id": "other",
                    "client_secret": OTHER_SECRET,
                    "redirect_uris": [OTHER_REDIRECT],
                },
                # A public client: no secret, so PKCE is its only proof.
                {"client_id": "spa", "redirect_uris": [SPA_REDIRECT]},
                # A confidential client that cannot send PKCE (as Moodle's OIDC plugins).
                {
                    "client_id": "nopkce",
                    "client_secret": NOPKCE_SECRET,
                    "redirect_uris": [NOPKCE_REDIRECT],
                    "require_pkce": False,
                },
            ],
            **provider,
        },
    }
    return Settings(**data)


@dataclass
class Bridge:
    app: Flask
    services: Services
    settings: Settings

    def client(self) -> Any:
        return self.app.test_client()

    def add_user(self, subject: str = "E1001", **fields: Any) -> tuple[int, str]:
        profile: dict[str, Any] = {
            "email": "ada@example.com",
            "given_name": "Ada",
            "family_name": "Lovelace",
            "department": "Engineering",
            "location": "London",
            "language": "en-GB",
            "manager": "E0001",
            "job_title": "Engineer",
            "groups": ["engineering", "staff"],
            "employment_status": "active",
        }
        profile.update(fields)
        with self.services.db.session() as session:
            user = User(**profile)
            session.add(user)
            session.flush()
            # In sync with the LMS, as a completed login leaves a person.
            user.lms_account_id = user.public_id
            session.add(IdentityLink(connection="portal", subject=subject, user_id=user.id))
            return user.id, user.public_id

    def set_user(self, user_id: int, **fields: Any) -> None:
        with self.services.db.session() as session:
            user = session.get(User, user_id)
            assert user is not None
            for name, value in fields.items():
                setattr(user, name, value)

    def signed_in(self, user_id: int, public_id: str, subject: str = "E1001") -> Any:
        """A test client holding a bridge session for this user."""
        client = self.client()
        session = self.services.sessions.create(user_id, public_id, "portal", subject)
        client.set_cookie(self.settings.session_cookie, session.sid)
        return client


def build_bridge(settings: Settings) -> Bridge:
    # Rooted in the package, for its templates and static files (the form_post page).
    app = Flask("sso_bridge")
    app.config["TESTING"] = True
    services = build_services(settings)
    app.extensions["sso_bridge"] = services
    services.db.upgrade()
    sync_clients(services.db, settings)
    init_provider(app)

    # Stands in for the bridge's error page: the code and status are what matter here.
    @app.errorhandler(BridgeError)
    def _page(exc: BridgeError) -> tuple[str, int]:
        return f"error page: {exc.code}", exc.status

    return Bridge(app, services, settings)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.mkdir()
    return path


@pytest.fixture
def make_bridge(tmp_path: Path, key_dir: Path) -> Iterator[Callable[..., Bridge]]:
    built: list[Bridge] = []

    def make(key_files: list[Path] | None = None, **provider: Any) -> Bridge:
        files = key_files or [write_key(key_dir / "rsa.pem", "rsa")]
        bridge = build_bridge(make_settings(tmp_path, files, **provider))
        built.append(bridge)
        return bridge

    yield make
    for bridge in built:
        bridge.services.close()


@pytest.fixture
def bridge(make_bridge: Callable[..., Bridge]) -> Bridge:
    return make_bridge()


# -- protocol helpers -------------------------------------------------------------------------


def s256(verifier: str) -> str:
    # Computed here, not with Authlib's helper, so the test checks the server independently.
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def query(response: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def redirect_base(response: Any) -> str:
    parts = urlsplit(response.headers["Location"])
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


@dataclass
class Authorized:
    response: Any
    verifier: str
    nonce: str
    state: str

    @property
    def code(self) -> str:
        return query(self.response)["code"]


def authorize(
    client: Any,
    client_id: str = "lms",
    redirect_uri: str | None = LMS_REDIRECT,
    scope: str = ALL_SCOPES,
    **params: Any,
) -> Authorized:
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    state = secrets.token_urlsafe(16)
    args: dict[str, Any] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "nonce": nonce,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    args.update(params)
    args = {k: v for k, v in args.items() if v is not None}
    response = client.get("/oauth2/authorize", query_string=args)
    return Authorized(response, verifier, nonce, state)


def redeem(
    client: Any,
    code: str,
    verifier: str | None,
    client_id: str = "lms",
    secret: str | None = LMS_SECRET,
    redirect_uri: str = LMS_REDIRECT,
    post_secret: bool = False,
) -> Any:
    data: dict[str, str] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
    }
    if verifier is not None:
        data["code_verifier"] = verifier
    headers: dict[str, str] = {}
    if secret is None or post_secret:
        data["client_id"] = client_id
        if secret is not None:
            data["client_secret"] = secret
    else:
        headers = basic(client_id, secret)
    return client.post("/oauth2/token", data=data, headers=headers)


def verify_id_token(client: Any, id_token: str) -> jwt.Token:
    jwks = client.get("/oauth2/jwks").get_json()
    token = jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=["RS256", "ES256"])
    return token


def assert_page(response: Any, status: int, code: str) -> None:
    """A refusal shown as a page: the status, the reason, and no redirect anywhere."""
    assert response.status_code == status
    assert "Location" not in response.headers
    assert response.get_data(as_text=True) == f"error page: {code}"


# -- discovery and keys -----------------------------------------------------------------------


def test_discovery_document_is_built_from_base_url(bridge: Bridge) -> None:
    from authlib.oidc.discovery import OpenIDProviderMetadata

    # A forged Host header must not leak into the endpoints the LMS will trust.
    response = bridge.client().get(
        "/.well-known/openid-configuration", base_url="http://evil.example"
    )
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["issuer"] == BASE
    assert doc["authorization_endpoint"] == f"{BASE}/oauth2/authorize"
    assert doc["token_endpoint"] == f"{BASE}/oauth2/token"
    assert doc["userinfo_endpoint"] == f"{BASE}/oauth2/userinfo"
    assert doc["jwks_uri"] == f"{BASE}/oauth2/jwks"
    assert "evil.example" not in response.get_data(as_text=True)
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert doc["grant_types_supported"] == ["authorization_code"]
    assert doc["subject_types_supported"] == ["public"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "none",
    ]
    assert set(doc["scopes_supported"]) == {"openid", "profile", "email", "employee", "groups"}
    assert {"sub", "employee_id", "groups", "email", "name"} <= set(doc["claims_supported"])
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["response_modes_supported"] == ["query", "form_post"]
    OpenIDProviderMetadata(doc).validate()


def test_jwks_publishes_public_keys_with_thumbprint_kids(bridge: Bridge, key_dir: Path) -> None:
    jwks = bridge.client().get("/oauth2/jwks").get_json()
    [jwk] = jwks["keys"]
    assert jwk["use"] == "sig"
    assert jwk["alg"] == "RS256"
    assert "d" not in jwk and "p" not in jwk
    expected = ProviderKeys([key_dir / "rsa.pem"]).signing.key.thumbprint()
    assert jwk["kid"] == expected


# -- the code flow ----------------------------------------------------------------------------


def test_full_code_flow_with_pkce(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    browser = bridge.signed_in(user_id, public_id)
    session = bridge.services.sessions.get(browser.get_cookie(bridge.settings.session_cookie).value)
    assert session is not None

    flow = authorize(browser)
    assert flow.response.status_code == 302
    assert redirect_base(flow.response) == LMS_REDIRECT
    params = query(flow.response)
    assert params["state"] == flow.state
    assert params["iss"] == BASE  # RFC 9207

    lms = bridge.client()
    response = redeem(lms, flow.code, flow.verifier)
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == bridge.settings.provider.access_token_lifetime
    assert "refresh_token" not in body
    assert set(body["scope"].split()) == set(ALL_SCOPES.split())

    token = verify_id_token(lms, body["id_token"])
    claims = token.claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": BASE},
        aud={"essential": True, "value": "lms"},
        nonce={"essential": True, "value": flow.nonce},
        sub={"essential": True, "value": public_id},
    ).validate(claims)
    assert (
        token.header["kid"]
        == bridge.app.extensions["sso_bridge_provider"].provider.keys.signing.kid
    )
    now = int(time.time())
    assert now - 5 <= claims["iat"] <= now
    assert claims["exp"] == claims["iat"] + bridge.settings.provider.id_token_lifetime
    assert claims["auth_time"] == session.auth_time
    # at_hash binds the access token to this ID token (OIDC Core 3.1.3.6).
    digest = hashlib.sha256(body["access_token"].encode()).digest()
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    expected = {
        "sub": public_id,
        "name": "Ada Lovelace",
        "given_name": "Ada",
        "family_name": "Lovelace",
        "locale": "en-GB",
        "email": "ada@example.com",
        "employee_id": "E1001",
        "department": "Engineering",
        "location": "London",
        "manager": "E0001",
        "job_title": "Engineer",
        "employment_status": "active",
        "groups": ["engineering", "staff"],
    }
    assert {k: claims[k] for k in expected} == expected
    assert "email_verified" not in claims

    info = lms.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert info.status_code == 200
    assert info.headers["Cache-Control"] == "no-store"
    assert info.get_json() == expected
    posted = lms.post(
        "/oauth2/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert posted.get_json() == expected


def test_claims_follow_the_scope(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user(display_name="Countess Ada")
    flow = authorize(bridge.signed_in(user_id, public_id), scope="openid profile")
    lms = bridge.client()
    body = redeem(lms, flow.code, flow.verifier).get_json()
    claims = verify_id_token(lms, body["id_token"]).claims
    assert claims["name"] == "Countess Ada"
    assert "email" not in claims and "employee_id" not in claims and "groups" not in claims
    info = lms.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert info.get_json() == {
        "sub": public_id,
        "name": "Countess Ada",
        "given_name": "Ada",
        "family_name": "Lovelace",
        "locale": "en-GB",
    }


def test_scopes_the_client_may_not_have_are_dropped(make_bridge: Callable[..., Bridge]) -> None:
    bridge = make_bridge()
    with bridge.services.db.session() as session:
        row = session.get(OidcClient, "lms")
        assert row is not None
        row.scopes = ["openid", "profile"]
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id), scope="openid email groups profile")
    body = redeem(bridge.client(), flow.code, flow.verifier).get_json()
    assert body["scope"] == "openid profile"


def test_form_post_puts_the_code_in_a_post_body_not_a_url(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id), response_mode="form_post")

    page = flow.response
    assert page.status_code == 200 and "Location" not in page.headers
    assert page.headers["Cache-Control"] == "no-store"
    action, fields = form_fields(page)
    assert action == LMS_REDIRECT
    assert set(fields) == {"code", "state", "iss"}
    assert (fields["state"], fields["iss"]) == (flow.state, BASE)
    # The page may post only to the client's origin, and run only its own script.
    policy = page.headers["Content-Security-Policy"]
    assert f"form-action {urlsplit(LMS_REDIRECT).scheme}://{urlsplit(LMS_REDIRECT).netloc};" in (
        policy
    )
    assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy
    assert redeem(bridge.client(), fields["code"], flow.verifier).status_code == 200


def test_form_post_carries_errors_too(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(
        bridge.signed_in(user_id, public_id), response_mode="form_post", code_challenge=None
    )
    action, fields = form_fields(flow.response)
    assert action == LMS_REDIRECT
    assert fields["error"] == "invalid_request" and fields["state"] == flow.state
    assert "code" not in fields


def test_a_response_mode_the_provider_does_not_offer_is_refused(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    browser = bridge.signed_in(user_id, public_id)
    for mode, description in (
        ("fragment", "response_mode must be query or form_post."),
        ("web_message", "response_mode must be query or form_post."),
        (["query", "form_post"], "response_mode appears more than once."),
    ):
        flow = authorize(browser, response_mode=mode)
        assert redirect_base(flow.response) == LMS_REDIRECT
        params = query(flow.response)
        assert (params["error"], params["error_description"]) == (
            "invalid_request",
            description,
        ), mode
        assert "code" not in params


def test_form_post_is_not_offered_to_an_unverified_redirect_uri(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(
        bridge.signed_in(user_id, public_id),
        response_mode="form_post",
        redirect_uri="https://evil.example/cb",
    )
    assert_page(flow.response, 400, "oidc_redirect_uri_invalid")


def test_nonce_is_optional(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id), nonce=None)
    lms = bridge.client()
    body = redeem(lms, flow.code, flow.verifier).get_json()
    assert "nonce" not in verify_id_token(lms, body["id_token"]).claims


def test_client_secret_post(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    response = redeem(bridge.client(), flow.code, flow.verifier, post_secret=True)
    assert response.status_code == 200, response.get_json()


def test_public_client_with_pkce(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(
        bridge.signed_in(user_id, public_id), client_id="spa", redirect_uri=SPA_REDIRECT
    )
    response = redeem(
        bridge.client(),
        flow.code,
        flow.verifier,
        client_id="spa",
        secret=None,
        redirect_uri=SPA_REDIRECT,
    )
    assert response.status_code == 200, response.get_json()
    claims = verify_id_token(bridge.client(), response.get_json()["id_token"]).claims
    assert claims["aud"] == "spa"


def test_public_client_cannot_use_a_secret(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(
        bridge.signed_in(user_id, public_id), client_id="spa", redirect_uri=SPA_REDIRECT
    )
    response = redeem(
        bridge.client(),
        flow.code,
        flow.verifier,
        client_id="spa",
        secret="x" * 40,
        redirect_uri=SPA_REDIRECT,
        post_secret=True,
    )
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


# -- refusals at the token endpoint -----------------------------------------------------------


def test_code_is_single_use(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    lms = bridge.client()
    assert redeem(lms, flow.code, flow.verifier).status_code == 200
    again = redeem(lms, flow.code, flow.verifier)
    assert again.status_code == 400
    assert again.get_json()["error"] == "invalid_grant"
    assert "access_token" not in again.get_json()


def test_wrong_verifier_is_refused_and_burns_the_code(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    lms = bridge.client()
    wrong = redeem(lms, flow.code, secrets.token_urlsafe(48))
    assert wrong.status_code == 400
    assert wrong.get_json()["error"] == "invalid_grant"
    # A failed guess costs the code: the verifier cannot be brute-forced against it.
    assert redeem(lms, flow.code, flow.verifier).get_json()["error"] == "invalid_grant"


def test_missing_verifier_is_refused(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    response = redeem(bridge.client(), flow.code, None)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert "access_token" not in response.get_json()


def test_public_client_without_verifier_is_refused(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(
        bridge.signed_in(user_id, public_id), client_id="spa", redirect_uri=SPA_REDIRECT
    )
    response = redeem(
        bridge.client(), flow.code, None, client_id="spa", secret=None, redirect_uri=SPA_REDIRECT
    )
    assert response.status_code == 400
    assert "access_token" not in response.get_json()


def test_wrong_client_secret_is_refused(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    lms = bridge.client()
    wrong = redeem(lms, flow.code, flow.verifier, secret="W" * 40)
    assert wrong.status_code == 401
    assert wrong.get_json()["error"] == "invalid_client"
    posted = redeem(lms, flow.code, flow.verifier, secret="W" * 40, post_secret=True)
    assert posted.get_json()["error"] == "invalid_client"
    # Leaving the secret out must not fall through to the public-client method.
    missing = redeem(lms, flow.code, flow.verifier, secret=None)
    assert missing.get_json()["error"] == "invalid_client"
    # The code was never looked at, so the real client can still redeem it.
    assert redeem(lms, flow.code, flow.verifier).status_code == 200


def test_code_of_client_a_is_refused_to_client_b(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    lms = bridge.client()
    stolen = redeem(
        lms,
        flow.code,
        flow.verifier,
        client_id="other",
        secret=OTHER_SECRET,
        redirect_uri=LMS_REDIRECT,
    )
    assert stolen.status_code == 400
    assert stolen.get_json()["error"] == "invalid_grant"
    # A code shown by the wrong client has leaked: it is burnt for its owner too.
    assert redeem(lms, flow.code, flow.verifier).get_json()["error"] == "invalid_grant"


def test_redirect_uri_must_match_at_the_token_endpoint(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    response = redeem(bridge.client(), flow.code, flow.verifier, redirect_uri=LMS_REDIRECT + "/x")
    assert response.get_json()["error"] == "invalid_grant"


def test_expired_code_is_refused(bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    lifetime = bridge.settings.provider.code_lifetime
    wall, mono = time.time, time.monotonic
    monkeypatch.setattr(time, "time", lambda: wall() + lifetime + 1)
    monkeypatch.setattr(time, "monotonic", lambda: mono() + lifetime + 1)
    response = redeem(bridge.client(), flow.code, flow.verifier)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


def test_code_is_kept_for_exactly_its_lifetime(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    key = "oidc-code:" + hashlib.sha256(flow.code.encode()).hexdigest()
    store = bridge.services.store
    assert store.get(key) is not None
    # Only the store's expiry moves here: the TTL itself must be code_lifetime.
    lifetime = bridge.settings.provider.code_lifetime
    mono = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: mono() + lifetime - 2)
    assert store.get(key) is not None
    monkeypatch.setattr(time, "monotonic", lambda: mono() + lifetime + 1)
    assert store.get(key) is None


def test_code_past_its_expiry_time_is_refused_even_if_the_store_kept_it(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    wall = time.time
    monkeypatch.setattr(time, "time", lambda: wall() + bridge.settings.provider.code_lifetime + 1)
    assert redeem(bridge.client(), flow.code, flow.verifier).get_json()["error"] == "invalid_grant"


def test_access_token_expires(bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    lms = bridge.client()
    access = redeem(lms, flow.code, flow.verifier).get_json()["access_token"]
    lifetime = bridge.settings.provider.access_token_lifetime
    wall, mono = time.time, time.monotonic
    monkeypatch.setattr(time, "time", lambda: wall() + lifetime + 1)
    monkeypatch.setattr(time, "monotonic", lambda: mono() + lifetime + 1)
    response = lms.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {access}"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"


def test_userinfo_needs_a_valid_bearer_token(bridge: Bridge) -> None:
    lms = bridge.client()
    assert lms.get("/oauth2/userinfo").status_code == 401
    forged = lms.get("/oauth2/userinfo", headers={"Authorization": "Bearer " + "a" * 43})
    assert forged.status_code == 401
    assert forged.get_json()["error"] == "invalid_token"
    assert "Bearer" in forged.headers["WWW-Authenticate"]


def test_token_endpoint_only_takes_post(bridge: Bridge) -> None:
    assert bridge.client().get("/oauth2/token").status_code == 405


def test_unsupported_grant_type(bridge: Bridge) -> None:
    response = bridge.client().post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, headers=basic("lms", LMS_SECRET)
    )
    assert response.get_json()["error"] == "unsupported_grant_type"


# -- refusals at the authorization endpoint ---------------------------------------------------


def test_plain_pkce_is_refused(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    verifier = secrets.token_urlsafe(48)
    flow = authorize(
        bridge.signed_in(user_id, public_id), code_challenge=verifier, code_challenge_method="plain"
    )
    assert flow.response.status_code == 302
    assert redirect_base(flow.response) == LMS_REDIRECT
    params = query(flow.response)
    assert params["error"] == "invalid_request"
    assert params["error_description"] == "code_challenge_method must be S256."
    assert params["state"] == flow.state
    assert params["iss"] == BASE
    assert "code" not in params


@pytest.mark.parametrize(
    ("drop", "description"),
    [
        (
            ("code_challenge", "code_challenge_method"),
            "PKCE is required: send code_challenge with method S256.",
        ),
        # RFC 7636 would read this as `plain`
        (("code_challenge_method",), "code_challenge_method must be S256."),
        (("code_challenge",), "code_challenge_method was sent without code_challenge."),
    ],
)
@pytest.mark.parametrize(
    ("client_id", "redirect_uri"), [("lms", LMS_REDIRECT), ("spa", SPA_REDIRECT)]
)
def test_missing_pkce_is_refused(
    bridge: Bridge, drop: tuple[str, ...], description: str, client_id: str, redirect_uri: str
) -> None:
    # The default (require_pkce = true), for a confidential and for a public client.
    user_id, public_id = bridge.add_user()
    missing: dict[str, Any] = dict.fromkeys(drop)
    flow = authorize(
        bridge.signed_in(user_id, public_id),
        client_id=client_id,
        redirect_uri=redirect_uri,
        **missing,
    )
    assert redirect_base(flow.response) == redirect_uri
    params = query(flow.response)
    assert params["error"] == "invalid_request"
    assert params["error_description"] == description
    assert params["state"] == flow.state
    assert "code" not in params


def test_unknown_client_gets_the_error_page(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id), client_id="intruder")
    assert_page(flow.response, 400, "oidc_client_unknown")


@pytest.mark.parametrize(
    "redirect_uri",
    [
        f"{BASE}/evil/callback",
        LMS_REDIRECT + "/extra",  # the registered URI as a prefix
        LMS_REDIRECT + "x",
        LMS_REDIRECT[:-1],  # a prefix of the registered URI
        LMS_REDIRECT + "/",
        LMS_REDIRECT + "?next=https://evil.example",
        LMS_REDIRECT + "#frag",
        LMS_REDIRECT.replace("127.0.0.1:5000", "127.0.0.1:5001"),
        LMS_REDIRECT.replace("/lms/", "/LMS/"),
        LMS_REDIRECT.replace("http://", "https://"),
        "https://evil.example/?" + LMS_REDIRECT,
        OTHER_REDIRECT,  # registered, but for another client
        None,
    ],
)
def test_unregistered_redirect_uri_gets_the_error_page(
    bridge: Bridge, redirect_uri: str | None
) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id), redirect_uri=redirect_uri)
    assert_page(flow.response, 400, "oidc_redirect_uri_invalid")


def test_bad_redirect_uri_wins_over_every_other_error(bridge: Bridge) -> None:
    # No session, prompt=none and plain PKCE: still a page, since the target is in doubt.
    flow = authorize(
        bridge.client(),
        redirect_uri=f"{BASE}/evil",
        prompt="none",
        code_challenge_method="plain",
        response_type="token",
    )
    assert flow.response.status_code == 400
    assert "Location" not in flow.response.headers


def test_disabled_client_is_unknown(
    make_bridge: Callable[..., Bridge], tmp_path: Path, key_dir: Path
) -> None:
    bridge = make_bridge()
    with bridge.services.db.session() as session:
        row = session.get(OidcClient, "other")
        assert row is not None
        row.enabled = False
    user_id, public_id = bridge.add_user()
    flow = authorize(
        bridge.signed_in(user_id, public_id), client_id="other", redirect_uri=OTHER_REDIRECT
    )
    assert_page(flow.response, 400, "oidc_client_unknown")


def test_unsupported_response_type_is_redirected(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id), response_type="token")
    params = query(flow.response)
    assert params["error"] == "unsupported_response_type"
    assert params["iss"] == BASE


def test_openid_scope_is_required(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id), scope="profile email")
    params = query(flow.response)
    assert params["error"] == "invalid_scope"
    assert "code" not in params


def test_no_session_with_prompt_none_redirects_login_required(bridge: Bridge) -> None:
    flow = authorize(bridge.client(), prompt="none")
    assert flow.response.status_code == 302
    assert redirect_base(flow.response) == LMS_REDIRECT
    params = query(flow.response)
    assert params["error"] == "login_required"
    assert params["state"] == flow.state
    assert params["iss"] == BASE


def test_no_session_shows_the_start_from_your_portal_page(bridge: Bridge) -> None:
    flow = authorize(bridge.client())
    assert_page(flow.response, 401, "login_required")


def test_unknown_session_cookie_is_no_session(bridge: Bridge) -> None:
    browser = bridge.client()
    browser.set_cookie(bridge.settings.session_cookie, secrets.token_urlsafe(32))
    assert_page(authorize(browser).response, 401, "login_required")


def test_prompt_login_cannot_be_honoured(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id), prompt="login")
    assert_page(flow.response, 401, "login_required")


def test_max_age(bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    user_id, public_id = bridge.add_user()
    browser = bridge.signed_in(user_id, public_id)
    assert "code" in query(authorize(browser, max_age="600").response)
    wall = time.time
    monkeypatch.setattr(time, "time", lambda: wall() + 601)
    assert_page(authorize(browser, max_age="600").response, 401, "login_required")
    silent = authorize(browser, max_age="600", prompt="none")
    assert query(silent.response)["error"] == "login_required"
    for bad in ("soon", "-1", "\u00b2", "1" * 11):
        assert query(authorize(browser, max_age=bad).response)["error"] == "invalid_request"


def test_blocked_user_is_denied(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user(blocked=True, blocked_reason="admin")
    flow = authorize(bridge.signed_in(user_id, public_id))
    assert flow.response.status_code == 302
    params = query(flow.response)
    assert params["error"] == "access_denied"
    assert params["state"] == flow.state
    assert params["iss"] == BASE
    assert "code" not in params


def test_leaver_is_denied(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user(employment_status="terminated")
    flow = authorize(bridge.signed_in(user_id, public_id))
    assert query(flow.response)["error"] == "access_denied"


def test_a_person_whose_change_the_lms_has_not_taken_is_denied(bridge: Bridge) -> None:
    # Their record holds, say, a new e-mail the LMS refused (another account's): claims
    # from it could sign them in to that account.
    user_id, public_id = bridge.add_user()
    bridge.set_user(user_id, email="ceo@example.com", lms_account_id=None)
    flow = authorize(bridge.signed_in(user_id, public_id))
    assert query(flow.response)["error"] == "access_denied"
    assert "code" not in query(flow.response)


def test_a_person_out_of_sync_after_the_code_gets_no_token(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    bridge.set_user(user_id, lms_account_id=None)
    response = redeem(bridge.client(), flow.code, flow.verifier)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


def test_user_blocked_after_the_code_gets_no_token(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    bridge.set_user(user_id, blocked=True)
    response = redeem(bridge.client(), flow.code, flow.verifier)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


def test_user_who_left_after_the_token_loses_userinfo(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    lms = bridge.client()
    access = redeem(lms, flow.code, flow.verifier).get_json()["access_token"]
    bridge.set_user(user_id, employment_status="terminated")
    response = lms.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {access}"})
    assert response.status_code == 401


def test_refusals_and_grants_are_audited(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    redeem(bridge.client(), flow.code, flow.verifier)
    redeem(bridge.client(), flow.code, flow.verifier)
    authorize(bridge.client(), client_id="intruder")
    events = [(e["event"], e["outcome"], e["reason"]) for e in bridge.services.audit.tail()]
    assert events == [
        ("oidc_authorize", "success", "code_issued"),
        ("oidc_token", "success", "token_issued"),
        ("oidc_token", "failure", "invalid_grant"),
        ("oidc_authorize", "failure", "oidc_client_unknown"),
    ]


# -- several instances ------------------------------------------------------------------------


@pytest.mark.redis
def test_code_is_single_use_across_instances(
    tmp_path: Path, key_dir: Path, redis_server: Any
) -> None:
    key = write_key(key_dir / "rsa.pem", "rsa")
    store = {"url": redis_server.url, "key_prefix": f"test-{uuid.uuid4().hex}:"}
    one = build_bridge(make_settings(tmp_path, [key], store=store))
    two = build_bridge(make_settings(tmp_path, [key], store=store))
    try:
        user_id, public_id = one.add_user()
        browser = one.signed_in(user_id, public_id)
        # Issued by one instance, redeemed at the other, then replayed at the first.
        flow = authorize(browser)
        assert redeem(two.client(), flow.code, flow.verifier).status_code == 200
        assert redeem(one.client(), flow.code, flow.verifier).get_json()["error"] == "invalid_grant"

        # Eight redemptions of one code racing on both instances: exactly one wins.
        flow = authorize(browser)
        clients = [one.client(), two.client()] * 4
        with ThreadPoolExecutor(len(clients)) as pool:
            statuses = list(
                pool.map(lambda c: redeem(c, flow.code, flow.verifier).status_code, clients)
            )
        assert sorted(statuses) == [200] + [400] * 7
    finally:
        one.services.close()
        two.services.close()


# -- keys and rotation ------------------------------------------------------------------------


def test_key_rotation(make_bridge: Callable[..., Bridge], key_dir: Path) -> None:
    old = write_key(key_dir / "old-rsa.pem", "rsa")
    new = write_key(key_dir / "new-ec.pem", "ec")
    before = make_bridge([old])
    user_id, public_id = before.add_user()
    flow = authorize(before.signed_in(user_id, public_id))
    old_token = redeem(before.client(), flow.code, flow.verifier).get_json()["id_token"]

    # The restart after the rotation: the new key signs, the old one stays published.
    after = build_bridge(make_settings(key_dir.parent / "after", [new, old]))
    try:
        old_kid = ProviderKeys([old]).signing.kid
        new_kid = ProviderKeys([new]).signing.kid
        lms = after.client()
        jwks = lms.get("/oauth2/jwks").get_json()
        assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]
        assert [k["alg"] for k in jwks["keys"]] == ["ES256", "RS256"]
        doc = lms.get("/.well-known/openid-configuration").get_json()
        assert doc["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]

        user_id, public_id = after.add_user()
        flow = authorize(after.signed_in(user_id, public_id))
        body = redeem(lms, flow.code, flow.verifier).get_json()
        fresh = verify_id_token(lms, body["id_token"])
        assert fresh.header["kid"] == new_kid
        assert fresh.header["alg"] == "ES256"
        # A token signed just before the rotation still verifies against the new JWKS.
        assert verify_id_token(lms, old_token).header["kid"] == old_kid
    finally:
        after.services.close()


def test_provider_keys_refuse_bad_files(key_dir: Path) -> None:
    with pytest.raises(ProviderKeyError) as empty:
        ProviderKeys([])
    assert str(empty.value) == (
        "provider.signing_key_files is empty: run `sso-bridge certs generate`"
    )
    for kind in ("small-rsa", "ed25519", "ec-p384", "public"):
        path = write_key(key_dir / f"{kind}.pem", kind)
        with pytest.raises(ValueError, match=re.escape(str(path))):
            ProviderKeys([path])
    garbage = key_dir / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(ValueError, match=re.escape(str(garbage))):
        ProviderKeys([garbage])
    missing = key_dir / "missing.pem"
    with pytest.raises(ValueError, match=re.escape(str(missing))):
        ProviderKeys([missing])
    good = write_key(key_dir / "good.pem", "rsa")
    with pytest.raises(ValueError, match="the same key"):
        ProviderKeys([good, good])


# -- client sync ------------------------------------------------------------------------------


def _clients(bridge: Bridge) -> dict[str, tuple[Any, ...]]:
    with bridge.services.db.session() as session:
        return {
            row.client_id: (
                row.secret_sha256,
                row.redirect_uris,
                row.scopes,
                row.enabled,
                row.updated_at,
                row.require_pkce,
            )
            for row in session.scalars(select(OidcClient))
        }


def test_sync_clients_is_idempotent_and_disables_dropped_clients(
    bridge: Bridge, tmp_path: Path, key_dir: Path
) -> None:
    first = _clients(bridge)
    assert first["lms"][0] == hashlib.sha256(LMS_SECRET.encode()).hexdigest()
    assert first["lms"][1] == [LMS_REDIRECT]
    assert first["spa"][0] is None
    assert (first["lms"][5], first["spa"][5], first["nopkce"][5]) == (True, True, False)
    sync_clients(bridge.services.db, bridge.settings)
    assert _clients(bridge) == first

    fewer = Settings(
        **{
            **bridge.settings.model_dump(),
            "provider": {
                **bridge.settings.provider.model_dump(),
                "clients": [
                    {
                        "client_id": "lms",
                        "client_secret": LMS_SECRET,
                        "redirect_uris": [LMS_REDIRECT, f"{BASE}/lms/other"],
                    }
                ],
            },
        }
    )
    sync_clients(bridge.services.db, fewer)
    rows = _clients(bridge)
    assert rows["other"][3] is False and rows["spa"][3] is False
    assert rows["lms"][1] == [LMS_REDIRECT, f"{BASE}/lms/other"]
    assert rows["lms"][3] is True
    flow = authorize(bridge.client(), client_id="other", redirect_uri=OTHER_REDIRECT)
    assert_page(flow.response, 400, "oidc_client_unknown")


# -- through the real app ---------------------------------------------------------------------


def test_the_real_app_shows_its_error_page_for_an_unknown_client(client: Any) -> None:
    """create_app wires the provider; its error page, not a redirect, answers a bad client."""
    response = client.get(
        "/oauth2/authorize",
        query_string={
            "response_type": "code",
            "client_id": "intruder",
            "redirect_uri": "https://evil.example/",
            "scope": "openid",
            "code_challenge": s256(secrets.token_urlsafe(48)),
            "code_challenge_method": "S256",
        },
    )
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert response.headers["X-Correlation-ID"] in response.get_data(as_text=True)
