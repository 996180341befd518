"""OpenID Connect and OAuth2 logins against a provider the tests control.

Modelled on the OpenID Foundation's relying-party conformance tests: each
defect the provider is told to produce must be refused with its reason code,
with no account, no session and no 5xx; the good flows and the tolerated
variants (kid absent with one key, key rotation) must pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from sso_bridge.models import User
from sso_bridge.settings import Settings

from .conftest import BASE_URL, Keys, accounts_and_login_reasons, build_app, settings_dict
from .oidc_rogue import CLIENT_ID, CLIENT_SECRET, RogueProvider


@pytest.fixture
def op() -> Iterator[RogueProvider]:
    with RogueProvider() as provider:
        yield provider
        provider.check()


@pytest.fixture
def make_app(
    make_settings: Callable[..., Settings], keys: Keys, tmp_path: Any, op: RogueProvider
) -> Callable[..., Any]:
    def make(**options: Any) -> Any:
        connections = settings_dict(keys, tmp_path)["connections"]
        connection: dict[str, Any] = {
            "type": "oidc",
            "display_name": "Rogue",
            "issuer": op.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }
        connection.update(options)
        connections["corp"] = connection
        return build_app(make_settings(connections=connections))

    return make


@pytest.fixture
def app(make_app: Callable[..., Any]) -> Any:
    return make_app()


class Browser:
    """One browser: it starts at the bridge, passes the provider, returns to the callback."""

    def __init__(self, app: Any, op: RogueProvider) -> None:
        self.app = app
        self.op = op
        self.client = app.test_client()

    def start(self, next_path: str | None = None) -> str:
        """Start a login; the provider's callback URL (not yet followed)."""
        query = {"next": next_path} if next_path else {}
        start = self.client.get("/oidc/corp/login", query_string=query)
        assert start.status_code == 302, start.get_data(as_text=True)
        return self.op.login(start.headers["Location"])

    def finish(self, callback_url: str) -> Any:
        parts = urlsplit(callback_url)
        assert parts.path == "/oidc/corp/callback"
        return self.client.get(parts.path, query_string=parts.query)

    def login(self, next_path: str | None = None) -> Any:
        return self.finish(self.start(next_path))


def refused(app: Any, response: Any, reason: str) -> None:
    """The refusal as people and admins see it: page, reason, audit, nothing else."""
    page = response.get_data(as_text=True)
    assert 400 <= response.status_code < 500, (response.status_code, page[:500])
    assert reason in page
    assert response.headers["X-Correlation-ID"] in page
    assert "sso_bridge_session" not in response.headers.get("Set-Cookie", "")
    users, reasons = accounts_and_login_reasons(app)
    assert users == 0
    assert reasons[-1] == reason


# -- the good flows ------------------------------------------------------------------------


def test_a_login_provisions_and_hands_off_with_the_deep_link(app: Any, op: RogueProvider) -> None:
    response = Browser(app, op).login("/courses/safety-101")
    assert response.status_code == 303
    assert "courses%2Fsafety-101" in response.headers["Location"]
    sent = op.last_authorize
    assert sent is not None
    # PKCE S256 always, a nonce, and this connection's own redirect URI.
    assert sent.code_challenge_method == "S256" and sent.code_challenge
    assert sent.nonce
    assert sent.redirect_uri == f"{BASE_URL}/oidc/corp/callback"
    assert op.last_token is not None and op.last_token.client_auth == "client_secret_basic"
    with app.extensions["sso_bridge"].db.session() as session:
        user = session.scalars(select(User)).one()
        assert (user.email, user.department) == ("ada@acme.example", "Engineering")
        assert [link.subject for link in user.links] == ["E1001"]


def test_client_secret_post(make_app: Callable[..., Any], op: RogueProvider) -> None:
    op.register_client("post-client", client_secret=CLIENT_SECRET, auth_method="client_secret_post")
    app = make_app(client_id="post-client", client_auth_method="client_secret_post")
    assert Browser(app, op).login().status_code == 303
    assert op.last_token is not None and op.last_token.client_auth == "client_secret_post"


def test_private_key_jwt(make_app: Callable[..., Any], op: RogueProvider, tmp_path: Any) -> None:
    from joserfc.jwk import RSAKey

    from sso_bridge.keyfiles import generate_private_key, write_private_key

    key = generate_private_key("rsa")
    write_private_key(tmp_path / "client.pem", key)
    public = RSAKey.import_key(key.public_key()).as_dict()
    op.register_client("jwt-client", auth_method="private_key_jwt", jwks={"keys": [public]})
    app = make_app(
        client_id="jwt-client",
        client_secret=None,
        client_auth_method="private_key_jwt",
        client_key_file=tmp_path / "client.pem",
    )
    assert Browser(app, op).login().status_code == 303
    assert op.last_token is not None and op.last_token.assertion_verified


def test_a_kid_absent_with_one_key_published_is_accepted(app: Any, op: RogueProvider) -> None:
    op.kid_absent_single_jwks()
    assert Browser(app, op).login().status_code == 303


def test_a_rotated_key_is_accepted_after_a_refetch(app: Any, op: RogueProvider) -> None:
    assert Browser(app, op).login().status_code == 303
    op.rotate()
    assert Browser(app, op).login().status_code == 303
    assert op.jwks_fetches == 2


def test_plain_oauth2_with_a_profile_url(
    make_settings: Callable[..., Settings], keys: Keys, tmp_path: Any, op: RogueProvider
) -> None:
    connections = settings_dict(keys, tmp_path)["connections"]
    connections["corp"] = {
        "type": "oauth2",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "authorization_endpoint": op.authorization_endpoint,
        "token_endpoint": op.token_endpoint,
        "profile_url": op.profile_endpoint,
        "scopes": ["profile"],
        "attributes": {"email": "mail", "department": "dept"},
    }
    app = build_app(make_settings(connections=connections))
    assert Browser(app, op).login().status_code == 303
    with app.extensions["sso_bridge"].db.session() as session:
        user = session.scalars(select(User)).one()
        assert (user.email, user.department) == ("ada@acme.example", "Engineering")
    assert op.last_authorize is not None and op.last_authorize.code_challenge_method == "S256"


# -- the conformance tests' refusals ------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "reason"),
    [
        ("issuer_mismatch", "oidc_issuer_mismatch"),
        ("aud_mismatch", "oidc_audience_mismatch"),
        ("sub_missing", "oidc_claim_missing"),
        ("iat_missing", "oidc_claim_missing"),
        ("kid_absent_multiple_jwks", "oidc_kid_unknown"),
        ("sig_none", "oidc_alg_forbidden"),
        ("bad_sig_rs256", "oidc_signature_invalid"),
        ("bad_sig_es256", "oidc_signature_invalid"),
        ("sig_hs256_client_secret", "oidc_alg_forbidden"),
        ("nonce_invalid", "oidc_nonce_mismatch"),
        ("exp_expired", "oidc_expired"),
        ("userinfo_bad_sub", "oidc_userinfo_sub_mismatch"),
        ("unknown_kid", "oidc_kid_unknown"),
        ("mix_up", "oidc_iss_parameter_mismatch"),
    ],
)
def test_conformance_refusals(app: Any, op: RogueProvider, preset: str, reason: str) -> None:
    getattr(op, preset)()
    refused(app, Browser(app, op).login(), reason)


def test_a_missing_iss_when_the_provider_advertises_it(app: Any, op: RogueProvider) -> None:
    op.discovery_overrides = {"authorization_response_iss_parameter_supported": True}
    op.iss_missing()
    refused(app, Browser(app, op).login(), "oidc_iss_parameter_mismatch")


def test_discovery_naming_another_issuer(app: Any, op: RogueProvider) -> None:
    op.discovery_issuer_mismatch()
    response = app.test_client().get("/oidc/corp/login")
    assert response.status_code == 503
    assert "oidc_discovery_invalid" in response.get_data(as_text=True)


def test_missing_and_unknown_state(app: Any, op: RogueProvider) -> None:
    browser = Browser(app, op)
    callback = browser.start()
    query = parse_qs(urlsplit(callback).query)
    refused(
        app,
        browser.client.get("/oidc/corp/callback", query_string={"code": query["code"][0]}),
        "oidc_state_missing",
    )
    refused(
        app,
        browser.client.get("/oidc/corp/callback", query_string={"code": "x", "state": "forged"}),
        "oidc_state_unknown",
    )


def test_a_replayed_callback(app: Any, op: RogueProvider) -> None:
    browser = Browser(app, op)
    callback = browser.start()
    assert browser.finish(callback).status_code == 303
    replay = browser.finish(callback)
    assert replay.status_code == 400
    assert "oidc_state_unknown" in replay.get_data(as_text=True)


def test_a_code_from_one_flow_with_another_flows_state(app: Any, op: RogueProvider) -> None:
    browser = Browser(app, op)
    first = parse_qs(urlsplit(browser.start()).query)
    second = parse_qs(urlsplit(browser.start()).query)
    # Flow B's state with flow A's code: B's PKCE verifier does not fit A's challenge.
    swapped = {"code": first["code"][0], "state": second["state"][0], "iss": op.issuer}
    refused(
        app,
        browser.client.get("/oidc/corp/callback", query_string=swapped),
        "oidc_token_request_failed",
    )


def test_a_callback_in_another_browser(app: Any, op: RogueProvider) -> None:
    callback = Browser(app, op).start()
    # Login CSRF: the attacker's callback URL, opened in the victim's browser.
    victim = app.test_client()
    parts = urlsplit(callback)
    refused(app, victim.get(parts.path, query_string=parts.query), "oidc_browser_mismatch")


def test_an_error_from_the_provider(app: Any, op: RogueProvider) -> None:
    op.authorize_error = "access_denied"
    refused(app, Browser(app, op).login(), "oidc_provider_error")


def test_a_tenant_restriction(make_app: Callable[..., Any], op: RogueProvider) -> None:
    op.id_token_claims = {"tid": "other-tenant"}
    app = make_app(allowed_claim_values={"tid": ["acme-tenant"]})
    response = Browser(app, op).login()
    assert response.status_code == 403
    assert "oidc_claim_not_allowed" in response.get_data(as_text=True)
    assert accounts_and_login_reasons(app)[0] == 0


def test_an_open_redirect_in_next_is_refused_before_the_provider_is_asked(
    app: Any, op: RogueProvider
) -> None:
    response = app.test_client().get("/oidc/corp/login", query_string={"next": "//evil.example"})
    assert response.status_code == 400
    assert op.authorize_requests == []


# -- from the security review ---------------------------------------------------------------


def test_a_stranger_with_the_state_cannot_cancel_the_login(app: Any, op: RogueProvider) -> None:
    victim = Browser(app, op)
    callback = victim.start()
    state = parse_qs(urlsplit(callback).query)["state"][0]
    attacker = app.test_client().get(
        "/oidc/corp/callback", query_string={"state": state, "code": "junk"}
    )
    assert "oidc_browser_mismatch" in attacker.get_data(as_text=True)
    assert victim.finish(callback).status_code == 303


@pytest.mark.parametrize("extra", [{"expires_in": [1]}, {"expires_in": {"a": 1}}])
def test_a_malformed_token_response_is_refused_not_a_500(
    app: Any, op: RogueProvider, extra: dict[str, Any]
) -> None:
    op.token_response = lambda body: {**body, **extra}
    refused(app, Browser(app, op).login(), "oidc_token_request_failed")


def test_a_token_response_without_an_id_token(app: Any, op: RogueProvider) -> None:
    op.token_response = lambda body: {k: v for k, v in body.items() if k != "id_token"}
    refused(app, Browser(app, op).login(), "oidc_id_token_malformed")


def test_userinfo_cannot_override_the_signed_tenant(
    make_app: Callable[..., Any], op: RogueProvider
) -> None:
    op.id_token_claims = {"tid": "other-tenant"}
    op.userinfo_claims = {"tid": "acme-tenant"}
    app = make_app(allowed_claim_values={"tid": ["acme-tenant"]})
    assert Browser(app, op).login().status_code == 403


def test_userinfo_cannot_override_the_signed_subject(
    make_app: Callable[..., Any], op: RogueProvider
) -> None:
    from sso_bridge.models import IdentityLink

    op.id_token_claims = {"oid": "OID-ADA"}
    op.userinfo_claims = {"oid": "OID-ADMIN"}
    app = make_app(subject_claim="oid")
    assert Browser(app, op).login().status_code == 303
    with app.extensions["sso_bridge"].db.session() as session:
        assert [link.subject for link in session.scalars(select(IdentityLink))] == ["OID-ADA"]


def test_a_list_valued_restricted_claim_is_refused(
    make_app: Callable[..., Any], op: RogueProvider
) -> None:
    op.id_token_claims = {"hd": ["acme.example", "evil.example"]}
    app = make_app(allowed_claim_values={"hd": ["acme.example"]})
    assert Browser(app, op).login().status_code == 403


def test_private_key_jwt_with_an_ec_key_and_a_short_assertion(
    make_app: Callable[..., Any], op: RogueProvider, tmp_path: Any
) -> None:
    from joserfc.jwk import ECKey

    from sso_bridge.keyfiles import generate_private_key, write_private_key

    key = generate_private_key("ec")
    write_private_key(tmp_path / "client.pem", key)
    public = ECKey.import_key(key.public_key()).as_dict()
    op.register_client("ec-client", auth_method="private_key_jwt", jwks={"keys": [public]})
    app = make_app(
        client_id="ec-client",
        client_secret=None,
        client_auth_method="private_key_jwt",
        client_key_file=tmp_path / "client.pem",
    )
    assert Browser(app, op).login().status_code == 303
    sent = op.last_token
    assert sent is not None and sent.assertion_verified
    assert sent.assertion_header is not None and sent.assertion_header["alg"] == "ES256"
    assert "kid" in sent.assertion_header
    claims = sent.assertion_claims
    assert claims is not None and claims["exp"] - claims["iat"] <= 60
    assert claims["aud"] == op.issuer


@pytest.mark.parametrize(
    "overrides",
    [
        {"authorization_endpoint": ["x"]},
        {"jwks_uri": "http://jwks.example.invalid/jwks"},
        {"token_endpoint": "http://token.example.invalid/token"},
    ],
)
def test_discovered_endpoints_must_be_https_urls(
    app: Any, op: RogueProvider, overrides: dict[str, Any]
) -> None:
    op.discovery_overrides = overrides
    response = app.test_client().get("/oidc/corp/login")
    assert response.status_code == 503
    assert "oidc_discovery_invalid" in response.get_data(as_text=True)


def test_logout_ends_the_session_even_when_discovery_fails(app: Any, op: RogueProvider) -> None:
    browser = Browser(app, op)
    assert browser.login().status_code == 303
    for key in list(app.extensions["sso_bridge"].store._data):
        if "oidc-discovery" in key:
            del app.extensions["sso_bridge"].store._data[key]
    op.discovery_issuer_mismatch()
    response = browser.client.get("/logout")
    assert response.status_code == 200
    assert "signed out" in response.get_data(as_text=True)


@pytest.mark.parametrize("claims", [{"exp": float("inf")}, {"iat": float("nan")}])
def test_non_finite_numbers_are_malformed(
    app: Any, op: RogueProvider, claims: dict[str, Any]
) -> None:
    op.id_token_claims = claims
    refused(app, Browser(app, op).login(), "oidc_id_token_malformed")


def test_a_non_ascii_nonce_is_a_mismatch_not_a_500(app: Any, op: RogueProvider) -> None:
    op.id_token_claims = {"nonce": "\u00e9t\u00e9"}
    refused(app, Browser(app, op).login(), "oidc_nonce_mismatch")


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": [CLIENT_ID, "someone-else"]}, "oidc_audience_mismatch"),
        ({"azp": "someone-else"}, "oidc_audience_mismatch"),
        ({"nonce": None}, "oidc_nonce_mismatch"),
    ],
)
def test_azp_and_nonce_rules(
    app: Any, op: RogueProvider, claims: dict[str, Any], reason: str
) -> None:
    op.id_token_claims = claims
    refused(app, Browser(app, op).login(), reason)


def test_iat_in_the_future_and_too_old(app: Any, op: RogueProvider) -> None:
    import time

    now = int(time.time())
    op.id_token_claims = {"iat": now + 3600}
    refused(app, Browser(app, op).login(), "oidc_not_yet_valid")
    op.id_token_claims = {"iat": now - 4000, "exp": now + 300}
    refused(app, Browser(app, op).login(), "oidc_expired")


def test_leeway(make_app: Callable[..., Any], op: RogueProvider) -> None:
    import time

    now = int(time.time())
    op.id_token_claims = {"exp": now - 30, "iat": now - 60}
    assert Browser(make_app(), op).login().status_code == 303  # default leeway 60 s


def test_an_algorithm_outside_the_pinned_list(
    make_app: Callable[..., Any], op: RogueProvider
) -> None:
    app = make_app(id_token_algorithms=["RS256"])
    op.sign_with = "es256"
    refused(app, Browser(app, op).login(), "oidc_alg_forbidden")


def test_the_jwks_refetch_is_rate_limited(app: Any, op: RogueProvider) -> None:
    op.unknown_kid()
    for expected in (1, 2, 2):
        refused(app, Browser(app, op).login(), "oidc_kid_unknown")
        assert op.jwks_fetches == expected


def test_a_token_endpoint_redirect_is_not_followed(
    make_app: Callable[..., Any], op: RogueProvider
) -> None:
    import threading

    from werkzeug.serving import make_server
    from werkzeug.wrappers import Response

    from .services import free_port

    def redirecting(environ: Any, start_response: Any) -> Any:
        answer = Response("", status=307, headers={"Location": op.token_endpoint})
        return answer(environ, start_response)

    port = free_port()
    server = make_server("127.0.0.1", port, redirecting, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app = make_app(token_endpoint=f"http://127.0.0.1:{port}/token")
        refused(app, Browser(app, op).login(), "oidc_token_request_failed")
        assert op.token_requests == []  # nothing was re-posted to the redirect's target
    finally:
        server.shutdown()


def test_a_mutable_subject_claim_is_refused_by_the_configuration() -> None:
    from pydantic import ValidationError

    from sso_bridge.settings import OidcConnection

    with pytest.raises(ValidationError, match="use sub or oid"):
        OidcConnection(
            type="oidc",
            issuer="https://op.example",
            client_id="c",
            client_secret="s",
            subject_claim="email",
        )
