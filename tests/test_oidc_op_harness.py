"""The OpenID Provider harness (tests/oidc_op) works, with Authlib as the relying party."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, KeySetSerialization
from joserfc.jwt import JWTClaimsRegistry

from tests.oidc_op import (
    PASSWORD,
    USERS,
    IdpError,
    OidcClient,
    OidcProvider,
    oidc_op_fixture,  # noqa: F401 - a pytest fixture (named oidc_op)
)
from tests.services import ServiceError

SCOPE = "openid profile email employee groups"
RP = "http://127.0.0.1:9"  # never contacted: the harness returns redirects unfollowed


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A browser's cookie jar."""
    with requests.Session() as session:
        yield session


def _new_client(op: OidcProvider, method: str = "client_secret_basic", **extra: Any) -> OidcClient:
    name = f"rp-{secrets.token_hex(4)}"
    return op.add_client(
        name,
        redirect_uris=[f"{RP}/{name}/callback"],
        post_logout_redirect_uris=[f"{RP}/{name}/logged-out"],
        token_endpoint_auth_method=method,
        **extra,
    )


def _session(client: OidcClient, **options: Any) -> OAuth2Session:
    options.setdefault("client_secret", client.client_secret)
    options.setdefault("token_endpoint_auth_method", client.token_endpoint_auth_method)
    options.setdefault("scope", SCOPE)
    return OAuth2Session(
        client.client_id,
        redirect_uri=client.redirect_uri,
        code_challenge_method="S256",
        **options,
    )


def _query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def _code_flow(
    op: OidcProvider,
    http: requests.Session,
    client: OidcClient,
    username: str = "ada",
    rp: OAuth2Session | None = None,
) -> tuple[dict[str, Any], str, str, OAuth2Session]:
    """Run the code flow with PKCE; returns (token, callback URL, nonce, Authlib session)."""
    rp = rp or _session(client)
    verifier = generate_token(64)
    nonce = generate_token(24)
    url, state = rp.create_authorization_url(
        op.authorization_endpoint, code_verifier=verifier, nonce=nonce
    )
    callback = op.login(http, url, username)
    assert callback.startswith(client.redirect_uri + "?"), callback
    params = _query(callback)
    assert params["state"] == state
    assert params["iss"] == op.issuer  # RFC 9207
    token = rp.fetch_token(
        op.token_endpoint, authorization_response=callback, code_verifier=verifier
    )
    return token, callback, nonce, rp


def _published_keys(op: OidcProvider) -> KeySet:
    return KeySet.import_key_set(cast(KeySetSerialization, op.jwks()))


def _verify_id_token(
    op: OidcProvider, client: OidcClient, id_token: str, nonce: str, alg: str = "RS256"
) -> jwt.Token:
    keys = _published_keys(op)
    token = jwt.decode(id_token, keys, algorithms=[alg])
    JWTClaimsRegistry(
        iss={"essential": True, "value": op.issuer},
        aud={"essential": True, "value": client.client_id},
        nonce={"essential": True, "value": nonce},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    ).validate(token.claims)
    return token


def test_discovery_announces_what_the_bridge_relies_on(oidc_op: OidcProvider) -> None:
    meta = oidc_op.metadata()
    assert meta["issuer"] == oidc_op.issuer
    assert oidc_op.discovery_url == f"{oidc_op.issuer}/.well-known/openid-configuration"
    assert meta["authorization_endpoint"] == oidc_op.authorization_endpoint
    assert meta["token_endpoint"] == oidc_op.token_endpoint
    assert meta["userinfo_endpoint"] == oidc_op.userinfo_endpoint
    assert meta["jwks_uri"] == oidc_op.jwks_uri
    assert meta["end_session_endpoint"] == oidc_op.end_session_endpoint
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["response_types_supported"] == ["code"]
    assert {"RS256", "ES256"} <= set(meta["id_token_signing_alg_values_supported"])
    assert {"client_secret_basic", "client_secret_post", "private_key_jwt"} <= set(
        meta["token_endpoint_auth_methods_supported"]
    )
    assert {"openid", "profile", "email", "employee", "groups"} <= set(meta["scopes_supported"])
    for key in oidc_op.jwks()["keys"]:
        assert "d" not in key


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_code_flow_with_pkce(oidc_op: OidcProvider, http: requests.Session, method: str) -> None:
    client = _new_client(oidc_op, method)
    rp = _session(client)
    sent: list[requests.PreparedRequest] = []
    rp.hooks["response"].append(lambda response, **_: sent.append(response.request))
    token, _callback, nonce, rp = _code_flow(oidc_op, http, client, rp=rp)

    # The client authenticated the way it is registered (oidc-provider takes either).
    token_request = next(r for r in sent if r.url == oidc_op.token_endpoint)
    body = parse_qs(str(token_request.body))
    if method == "client_secret_basic":
        assert token_request.headers["Authorization"].startswith("Basic ")
        assert "client_secret" not in body
    else:
        assert "Authorization" not in token_request.headers
        assert body["client_secret"] == [client.client_secret]

    assert token["token_type"].lower() == "bearer"
    id_token = _verify_id_token(oidc_op, client, token["id_token"], nonce)
    assert id_token.header["kid"] == oidc_op.signing_kid("RS256")
    assert id_token.claims["sub"] == USERS["ada"]["sub"]
    # With an access token issued, the scopes' claims are in userinfo only (by default).
    assert "email" not in id_token.claims

    userinfo = rp.get(oidc_op.userinfo_endpoint).json()
    assert userinfo == USERS["ada"]


def test_a_wrong_client_secret_is_refused(oidc_op: OidcProvider, http: requests.Session) -> None:
    client = _new_client(oidc_op, "client_secret_post")
    rp = _session(client, client_secret="not-the-secret")
    with pytest.raises(OAuthError, match="invalid_client"):
        _code_flow(oidc_op, http, client, rp=rp)


def test_private_key_jwt_and_es256_id_tokens(oidc_op: OidcProvider, http: requests.Session) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "rp-key", "alg": "ES256"}, private=True)
    client = _new_client(
        oidc_op,
        "private_key_jwt",
        jwks={"keys": [key.as_dict(private=False)]},
        id_token_signed_response_alg="ES256",
    )
    rp = _session(client, client_secret=key)
    rp.register_client_auth_method(PrivateKeyJWT(oidc_op.token_endpoint, alg="ES256"))
    token, _callback, nonce, rp = _code_flow(oidc_op, http, client, rp=rp)
    id_token = _verify_id_token(oidc_op, client, token["id_token"], nonce, alg="ES256")
    assert id_token.header["kid"] == oidc_op.signing_kid("ES256")


def test_pkce_is_required(oidc_op: OidcProvider, http: requests.Session) -> None:
    client = _new_client(oidc_op)
    rp = OAuth2Session(client.client_id, client.client_secret, scope=SCOPE)
    url, _state = rp.create_authorization_url(
        oidc_op.authorization_endpoint, redirect_uri=client.redirect_uri, nonce="n"
    )
    callback = oidc_op.login(http, url, "ada")
    params = _query(callback)
    assert params["error"] == "invalid_request"
    assert "PKCE" in params["error_description"]
    assert params["iss"] == oidc_op.issuer


def test_a_wrong_password_and_a_cancel(oidc_op: OidcProvider, http: requests.Session) -> None:
    client = _new_client(oidc_op)
    rp = _session(client)
    url, state = rp.create_authorization_url(
        oidc_op.authorization_endpoint, code_verifier=generate_token(64), nonce="n"
    )
    with pytest.raises(IdpError, match="refused the password"):
        oidc_op.login(http, url, "ada", password=PASSWORD + "x")
    with pytest.raises(IdpError, match="refused the password"):
        oidc_op.login(http, url, "nobody")
    callback = oidc_op.deny(http, url)
    params = _query(callback)
    assert params["error"] == "access_denied"
    assert params["state"] == state
    assert params["iss"] == oidc_op.issuer


def test_user_claims_come_from_the_config(oidc_op: OidcProvider, http: requests.Session) -> None:
    claims = {
        "sub": "00u-new-hire-2001",
        "email": "new.hire@acme.example",
        "given_name": "Nia",
        "family_name": "Neu",
        "name": "Nia Neu",
        "locale": "de-DE",
        "department": "Finance",
        "location": "Berlin",
        "employee_id": "E2001",
        "groups": ["finance"],
    }
    oidc_op.set_user("nia", claims)
    client = _new_client(oidc_op)
    _token, _callback, _nonce, rp = _code_flow(oidc_op, http, client, username="nia")
    assert rp.get(oidc_op.userinfo_endpoint).json() == claims

    oidc_op.set_user("nia", {**claims, "department": "Treasury"})
    assert rp.get(oidc_op.userinfo_endpoint).json()["department"] == "Treasury"
    oidc_op.remove_user("nia")


def test_scopes_limit_the_claims(oidc_op: OidcProvider, http: requests.Session) -> None:
    client = _new_client(oidc_op)
    rp = _session(client, scope="openid email")
    _token, _callback, _nonce, rp = _code_flow(oidc_op, http, client, username="zoe", rp=rp)
    assert rp.get(oidc_op.userinfo_endpoint).json() == {
        "sub": USERS["zoe"]["sub"],
        "email": USERS["zoe"]["email"],
        "email_verified": True,
    }


def test_key_rotation(oidc_op: OidcProvider, http: requests.Session) -> None:
    client = _new_client(oidc_op)
    before, _callback, nonce_before, _rp = _code_flow(oidc_op, http, client)
    old_kid = jwt.decode(before["id_token"], _published_keys(oidc_op)).header["kid"]
    assert old_kid == oidc_op.signing_kid("RS256")

    new_kid = oidc_op.rotate_key("RS256")
    assert new_kid != old_kid
    published = [key["kid"] for key in oidc_op.jwks()["keys"]]
    assert new_kid in published
    assert old_kid in published

    # The session at the provider survives the rotation: no password is asked again.
    after, _callback, nonce_after, _rp = _code_flow(oidc_op, http, client, username="not-asked")
    assert _verify_id_token(oidc_op, client, after["id_token"], nonce_after).header["kid"] == (
        new_kid
    )
    # A token signed before the rotation still verifies with the published keys.
    _verify_id_token(oidc_op, client, before["id_token"], nonce_before)


def test_rp_initiated_logout(oidc_op: OidcProvider, http: requests.Session) -> None:
    client = _new_client(oidc_op)
    token, _callback, _nonce, rp = _code_flow(oidc_op, http, client)

    # While the session lasts, prompt=none signs in without a form.
    silent, _state = rp.create_authorization_url(
        oidc_op.authorization_endpoint, code_verifier=generate_token(64), prompt="none"
    )
    assert "code" in _query(oidc_op.login(http, silent, "not-asked"))

    url = oidc_op.logout_url(
        id_token_hint=token["id_token"],
        post_logout_redirect_uri=client.post_logout_redirect_uris[0],
        state="bye-123",
    )
    assert url.startswith(oidc_op.end_session_endpoint + "?")
    back = oidc_op.logout(http, url)
    assert back.startswith(client.post_logout_redirect_uris[0] + "?")
    assert _query(back)["state"] == "bye-123"

    silent, _state = rp.create_authorization_url(
        oidc_op.authorization_endpoint, code_verifier=generate_token(64), prompt="none"
    )
    assert _query(oidc_op.login(http, silent, "ada"))["error"] == "login_required"

    # Without a post_logout_redirect_uri the provider shows its own page.
    assert oidc_op.logout(http, oidc_op.logout_url()).startswith(oidc_op.issuer)


def test_bad_client_metadata_is_refused_and_changes_nothing(oidc_op: OidcProvider) -> None:
    before = oidc_op.clients
    with pytest.raises(ServiceError, match="refused"):
        oidc_op.add_client("bad", redirect_uris=["not a url"])
    assert oidc_op.clients == before
    assert "bad" not in oidc_op.clients


def test_restart_keeps_clients_users_and_keys(http: requests.Session) -> None:
    # A private provider, which also puts the scopes' claims into the ID token.
    with OidcProvider(users={"ada": USERS["ada"]}, conform_id_token_claims=False) as op:
        client = _new_client(op)
        kid = op.rotate_key("RS256")
        port = op.port
        op.restart()
        assert op.port == port
        token, _callback, nonce, _rp = _code_flow(op, http, client)
        id_token = _verify_id_token(op, client, token["id_token"], nonce)
        assert id_token.header["kid"] == kid
        assert id_token.claims["email"] == USERS["ada"]["email"]
        assert id_token.claims["groups"] == USERS["ada"]["groups"]
