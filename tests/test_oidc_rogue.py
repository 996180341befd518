"""The rogue OpenID Provider (tests/oidc_rogue.py) does what each switch and preset claims.

A real client (Authlib's OAuth2Session) talks to it over HTTP; ID tokens are checked with
joserfc against the JWKS the provider serves. These tests guard the harness the OIDC
connector's negative tests stand on: a preset that silently produced a valid token would
make a refusal test pass for the wrong reason, or never test anything.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc import jwt
from joserfc.errors import BadSignatureError, ExpiredTokenError, JoseError
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from .oidc_rogue import (
    ASSERTION_TYPE,
    CLIENT_SECRET,
    DEFAULT_REDIRECT_URI,
    PRESETS,
    USERS,
    RogueProvider,
    RogueProviderError,
    decode_unverified,
    s256,
)

ID_TOKEN_ALGS = ["RS256", "ES256"]


@pytest.fixture(scope="module")
def shared_op() -> Iterator[RogueProvider]:
    with RogueProvider() as provider:
        yield provider


@pytest.fixture
def op(shared_op: RogueProvider) -> Iterator[RogueProvider]:
    """One server for the module, every switch and record reset for each test."""
    shared_op.reset()
    shared_op.clear_records()
    shared_op.retired_keys.clear()
    yield shared_op
    shared_op.check()


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


def get(url: str, **kwargs: Any) -> requests.Response:
    with http() as session:
        return session.get(url, allow_redirects=False, timeout=10, **kwargs)


def post(url: str, **kwargs: Any) -> requests.Response:
    with http() as session:
        return session.post(url, allow_redirects=False, timeout=10, **kwargs)


def oauth_session(
    op: RogueProvider, scope: str = "openid profile email", **kwargs: Any
) -> OAuth2Session:
    kwargs.setdefault("client_secret", op.client_secret)
    session = OAuth2Session(
        kwargs.pop("client_id", op.client_id),
        scope=scope,
        redirect_uri=DEFAULT_REDIRECT_URI,
        code_challenge_method="S256",
        **kwargs,
    )
    session.trust_env = False
    return session


class Login:
    """One authorization code flow, up to the token response."""

    def __init__(self, op: RogueProvider, session: OAuth2Session | None = None) -> None:
        self.session = session or oauth_session(op)
        self.verifier = generate_token(48)
        self.nonce = generate_token(20)
        url, self.state = self.session.create_authorization_url(
            op.authorization_endpoint, code_verifier=self.verifier, nonce=self.nonce
        )
        self.callback = op.login(url)
        self.params = {k: v[0] for k, v in parse_qs(urlsplit(self.callback).query).items()}

    def fetch_token(self, op: RogueProvider, **kwargs: Any) -> dict[str, Any]:
        token: dict[str, Any] = self.session.fetch_token(
            op.token_endpoint,
            authorization_response=self.callback,
            code_verifier=self.verifier,
            **kwargs,
        )
        return token

    def id_token(self, op: RogueProvider) -> str:
        return str(self.fetch_token(op)["id_token"])


def served_jwks(op: RogueProvider) -> dict[str, Any]:
    response = get(op.jwks_uri)
    assert response.status_code == 200
    jwks: dict[str, Any] = response.json()
    return jwks


def served_keys(op: RogueProvider) -> KeySet:
    jwks: Any = served_jwks(op)
    return KeySet.import_key_set(jwks)


def verify(op: RogueProvider, id_token: str, nonce: str) -> dict[str, Any]:
    """What a correct relying party does: signature against /jwks, then the claims."""
    token = jwt.decode(id_token, served_keys(op), algorithms=ID_TOKEN_ALGS)
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": op.issuer},
        aud={"essential": True, "value": op.client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    ).validate(token.claims)
    return dict(token.claims)


def signature_verifies(id_token: str, key: Any, alg: str) -> bool:
    try:
        jwt.decode(id_token, key, algorithms=[alg])
    except BadSignatureError:
        return False
    return True


def public(key: RSAKey | ECKey) -> RSAKey | ECKey:
    return type(key).import_key(key.as_dict(private=False))


# --- discovery, keys, counters -------------------------------------------------------


def test_discovery_describes_the_provider_and_is_counted(op: RogueProvider) -> None:
    document = get(op.discovery_url).json()
    assert document["issuer"] == op.issuer == f"http://127.0.0.1:{op.port}"
    assert document["authorization_endpoint"] == op.issuer + "/authorize"
    assert document["token_endpoint"] == op.issuer + "/token"
    assert document["userinfo_endpoint"] == op.issuer + "/userinfo"
    assert document["jwks_uri"] == op.issuer + "/jwks"
    assert document["end_session_endpoint"] == op.issuer + "/logout"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert "private_key_jwt" in document["token_endpoint_auth_methods_supported"]
    get(op.discovery_url)
    assert op.discovery_fetches == 2
    assert op.jwks_fetches == 0


def test_discovery_issuer_mismatch_changes_only_the_issuer(op: RogueProvider) -> None:
    good = get(op.discovery_url).json()
    op.apply("rp-discovery-issuer-not-matching-config")
    bad = get(op.discovery_url).json()
    assert bad["issuer"] == "https://op.example.org" != op.issuer
    assert {k: v for k, v in bad.items() if k != "issuer"} == {
        k: v for k, v in good.items() if k != "issuer"
    }
    op.discovery_overrides = {"jwks_uri": "http://127.0.0.1:1/jwks", "end_session_endpoint": None}
    overridden = get(op.discovery_url).json()
    assert overridden["jwks_uri"] == "http://127.0.0.1:1/jwks"
    assert "end_session_endpoint" not in overridden


def test_jwks_publishes_public_rsa_and_ec_keys_with_kids(op: RogueProvider) -> None:
    jwks = served_jwks(op)
    assert op.jwks_fetches == 1
    by_kid = {key["kid"]: key for key in jwks["keys"]}
    assert set(by_kid) == {op.rsa_key.kid, op.ec_key.kid}
    rsa, ec = by_kid[op.rsa_key.kid], by_kid[op.ec_key.kid]
    assert (rsa["kty"], rsa["alg"], rsa["use"]) == ("RSA", "RS256", "sig")
    assert (ec["kty"], ec["crv"], ec["alg"]) == ("EC", "P-256", "ES256")
    assert RSAKey.import_key(rsa).raw_value.key_size == 2048
    for key in jwks["keys"]:
        assert "d" not in key and "p" not in key  # public halves only
    op.reset_counters()
    assert op.jwks_fetches == 0


# --- the good flow --------------------------------------------------------------------


def test_good_flow_yields_a_valid_id_token_and_records_pkce_and_nonce(op: RogueProvider) -> None:
    login = Login(op)
    authorize = op.last_authorize
    assert authorize.client_id == op.client_id
    assert authorize.redirect_uri == DEFAULT_REDIRECT_URI
    assert authorize.response_type == "code"
    assert authorize.scopes == ["openid", "profile", "email"]
    assert authorize.code_challenge_method == "S256"
    assert authorize.code_challenge == s256(login.verifier)
    assert authorize.nonce == login.nonce
    assert authorize.state == login.state
    assert login.callback.startswith(DEFAULT_REDIRECT_URI + "?")
    assert login.params == {"code": authorize.code, "state": login.state, "iss": op.issuer}
    assert op.codes[login.params["code"]] is authorize

    token = login.fetch_token(op)
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 300
    assert token["access_token"]
    header, _, _ = decode_unverified(token["id_token"])
    assert header == {"alg": "RS256", "typ": "JWT", "kid": op.rsa_key.kid}
    claims = verify(op, token["id_token"], login.nonce)
    assert claims["aud"] == [op.client_id]
    assert claims["sub"] == "E1001"
    assert claims["email"] == "ada@acme.example"
    assert claims["exp"] - claims["iat"] == 300
    assert abs(claims["iat"] - time.time()) < 30

    record = op.last_token
    assert record.status == 200 and record.error is None
    assert record.client_auth == "client_secret_basic"
    assert record.client_id == op.client_id
    assert record.code_verifier == login.verifier
    assert record.authorize is authorize
    assert op.codes == {}  # single use

    userinfo = login.session.get(op.userinfo_endpoint).json()
    assert userinfo["sub"] == claims["sub"]
    assert userinfo["email"] == "ada@acme.example"
    assert op.userinfo_requests[-1].token == token["access_token"]


def test_the_logged_in_user_can_be_chosen(op: RogueProvider) -> None:
    op.user = "zoe"
    login = Login(op)
    claims = verify(op, login.id_token(op), login.nonce)
    assert claims["sub"] == "E1002"
    assert claims["name"] == USERS["zoe"]["name"]


def test_es256_signing_verifies_against_the_published_ec_key(op: RogueProvider) -> None:
    op.sign_with = "es256"
    login = Login(op)
    id_token = login.id_token(op)
    header, _, signature = decode_unverified(id_token)
    assert header == {"alg": "ES256", "typ": "JWT", "kid": op.ec_key.kid}
    assert len(signature) == 64
    verify(op, id_token, login.nonce)


def test_reset_restores_a_correct_provider(op: RogueProvider) -> None:
    op.sig_none().mix_up()
    op.publish = set()
    op.reset()
    login = Login(op)
    assert login.params["iss"] == op.issuer
    verify(op, login.id_token(op), login.nonce)


# --- the authorization response -------------------------------------------------------


@pytest.mark.parametrize(
    ("configure", "expected"),
    [
        (lambda op: op.mix_up(), {"iss": "http://other"}),
        (
            lambda op: setattr(op, "authorize_iss", "http://evil.example"),
            {"iss": "http://evil.example"},
        ),
        (lambda op: op.iss_missing(), {"iss": None}),
        (lambda op: setattr(op, "drop_state", True), {"state": None}),
        (lambda op: setattr(op, "state_override", "forged"), {"state": "forged"}),
    ],
    ids=["mix-up", "authorize-iss", "iss-missing", "drop-state", "state-override"],
)
def test_authorization_response_overrides(
    op: RogueProvider, configure: Any, expected: dict[str, str | None]
) -> None:
    configure(op)
    login = Login(op)
    assert login.params["code"] == op.last_authorize.code
    for name, value in expected.items():
        assert login.params.get(name) == value
    defaults = {"state": login.state, "iss": op.issuer}
    for name, value in defaults.items():
        if name not in expected:
            assert login.params[name] == value


def test_authorize_error_and_unsupported_response_type_redirect_with_an_error(
    op: RogueProvider,
) -> None:
    op.authorize_error = "access_denied"
    login = Login(op)
    assert login.params == {"error": "access_denied", "state": login.state, "iss": op.issuer}
    assert op.last_authorize.code is None and op.codes == {}
    op.reset()
    location = op.login(
        f"{op.authorization_endpoint}?client_id={op.client_id}&response_type=token"
        f"&redirect_uri={DEFAULT_REDIRECT_URI}&state=s1"
    )
    assert parse_qs(urlsplit(location).query)["error"] == ["unsupported_response_type"]


def test_require_pkce_refuses_an_authorization_request_without_a_challenge(
    op: RogueProvider,
) -> None:
    op.require_pkce = True
    session = OAuth2Session(op.client_id, op.client_secret, redirect_uri=DEFAULT_REDIRECT_URI)
    url, _ = session.create_authorization_url(op.authorization_endpoint)
    params = parse_qs(urlsplit(op.login(url)).query)
    assert params["error"] == ["invalid_request"]


def test_unknown_client_and_unregistered_redirect_uri_get_an_error_page(
    op: RogueProvider,
) -> None:
    response = get(op.authorization_endpoint, params={"client_id": "nobody", "redirect_uri": "x"})
    assert response.status_code == 400
    op.register_client("strict", client_secret="x" * 32, redirect_uris=["http://127.0.0.1:5000/cb"])
    response = get(
        op.authorization_endpoint,
        params={"client_id": "strict", "redirect_uri": "http://127.0.0.1:5000/evil"},
    )
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert op.last_authorize.error == "invalid_redirect_uri"


# --- ID token presets: each produces exactly its defect -------------------------------


def test_every_preset_id_names_a_method(op: RogueProvider) -> None:
    for test_id, method in PRESETS.items():
        assert callable(getattr(op, method)), test_id
        op.apply(test_id)
        op.reset()
        op.retired_keys.clear()
    with pytest.raises(KeyError):
        op.apply("rp-no-such-test")


@pytest.mark.parametrize(
    ("preset", "claim", "expected"),
    [
        ("rp-id_token-issuer-mismatch", "iss", "https://op.example.org"),
        ("rp-id_token-aud", "aud", ["someone-else"]),
    ],
)
def test_claim_value_presets(op: RogueProvider, preset: str, claim: str, expected: Any) -> None:
    op.apply(preset)
    login = Login(op)
    id_token = login.id_token(op)
    token = jwt.decode(id_token, served_keys(op), algorithms=ID_TOKEN_ALGS)  # signature valid
    assert token.claims[claim] == expected
    good = op.id_token_claims_for(op.last_authorize)
    assert {
        k: v for k, v in token.claims.items() if k not in (claim, "exp", "iat", "auth_time")
    } == {k: v for k, v in good.items() if k not in (claim, "exp", "iat", "auth_time")}
    with pytest.raises(JoseError):
        verify(op, id_token, login.nonce)


@pytest.mark.parametrize(("preset", "claim"), [("sub_missing", "sub"), ("iat_missing", "iat")])
def test_claim_missing_presets(op: RogueProvider, preset: str, claim: str) -> None:
    op.apply(preset)
    login = Login(op)
    id_token = login.id_token(op)
    token = jwt.decode(id_token, served_keys(op), algorithms=ID_TOKEN_ALGS)
    assert claim not in token.claims
    assert {"iss", "aud", "exp", "nonce"} - {claim} <= set(token.claims)
    with pytest.raises(JoseError, match=claim):
        verify(op, id_token, login.nonce)


def test_nonce_invalid(op: RogueProvider) -> None:
    op.apply("rp-nonce-invalid")
    login = Login(op)
    id_token = login.id_token(op)
    claims = jwt.decode(id_token, served_keys(op), algorithms=ID_TOKEN_ALGS).claims
    assert op.last_authorize.nonce == login.nonce  # the client did send its nonce
    assert claims["nonce"] and claims["nonce"] != login.nonce
    with pytest.raises(JoseError, match="nonce"):
        verify(op, id_token, login.nonce)


def test_no_nonce_in_the_request_means_none_in_the_id_token(op: RogueProvider) -> None:
    session = oauth_session(op)
    verifier = generate_token(48)
    url, _ = session.create_authorization_url(op.authorization_endpoint, code_verifier=verifier)
    callback = op.login(url)
    token = session.fetch_token(
        op.token_endpoint, authorization_response=callback, code_verifier=verifier
    )
    assert "nonce" not in decode_unverified(token["id_token"])[1]


def test_exp_in_the_past(op: RogueProvider) -> None:
    op.apply("exp_expired")
    login = Login(op)
    id_token = login.id_token(op)
    claims = jwt.decode(id_token, served_keys(op), algorithms=ID_TOKEN_ALGS).claims
    now = time.time()
    assert claims["exp"] < now - 300
    assert claims["iat"] < claims["exp"]
    with pytest.raises(ExpiredTokenError):
        verify(op, id_token, login.nonce)


def test_sig_none(op: RogueProvider) -> None:
    op.apply("rp-id_token-sig-none")
    login = Login(op)
    id_token = login.id_token(op)
    header, claims, signature = decode_unverified(id_token)
    assert header == {"alg": "none", "typ": "JWT"}
    assert signature == b"" and id_token.endswith(".")
    assert claims["iss"] == op.issuer and claims["nonce"] == login.nonce
    with pytest.raises(JoseError):
        verify(op, id_token, login.nonce)


def test_header_alg_none_alone_makes_an_unsigned_token(op: RogueProvider) -> None:
    op.id_token_header = {"alg": "none"}
    header, _, signature = decode_unverified(Login(op).id_token(op))
    assert header["alg"] == "none" and "kid" not in header and signature == b""


@pytest.mark.parametrize(
    ("preset", "alg", "key_name"),
    [("rp-id_token-bad-sig-rs256", "RS256", "rsa_key"), ("bad_sig_es256", "ES256", "ec_key")],
)
def test_bad_signature(op: RogueProvider, preset: str, alg: str, key_name: str) -> None:
    op.apply(preset)
    login = Login(op)
    id_token = login.id_token(op)
    header, claims, signature = decode_unverified(id_token)
    key = getattr(op, key_name)
    assert header == {"alg": alg, "typ": "JWT", "kid": key.kid}  # a published kid
    assert len(signature) == (256 if alg == "RS256" else 64)
    assert claims["nonce"] == login.nonce
    assert not signature_verifies(id_token, public(key), alg)
    with pytest.raises(BadSignatureError):
        verify(op, id_token, login.nonce)
    # The same token with the bit flipped back verifies: only the signature is wrong.
    op.reset()
    fixed = op.sign(claims, sign_with="rs256" if alg == "RS256" else "es256")
    if alg == "RS256":  # RSA PKCS#1 v1.5 is deterministic: the one flipped bit is the defect
        good_signature = decode_unverified(fixed)[2]
        assert bytes(a ^ b for a, b in zip(signature, good_signature, strict=True)).count(0) == 255


def test_hs256_signed_with_the_client_secret(op: RogueProvider) -> None:
    op.apply("rp-id_token-sig-hs256")
    login = Login(op)
    id_token = login.id_token(op)
    header, _, _ = decode_unverified(id_token)
    assert header == {"alg": "HS256", "typ": "JWT"}
    secret = OctKey.import_key(CLIENT_SECRET.encode())
    token = jwt.decode(id_token, secret, algorithms=["HS256"])
    assert token.claims["aud"] == [op.client_id]
    with pytest.raises(JoseError):
        verify(op, id_token, login.nonce)


def test_kid_absent_with_a_single_published_key(op: RogueProvider) -> None:
    op.apply("rp-id_token-kid-absent-single-jwks")
    login = Login(op)
    id_token = login.id_token(op)
    header, _, _ = decode_unverified(id_token)
    assert header == {"alg": "RS256", "typ": "JWT"}
    jwks = served_jwks(op)
    assert [key["kid"] for key in jwks["keys"]] == [op.rsa_key.kid]
    only = RSAKey.import_key(jwks["keys"][0])
    assert signature_verifies(id_token, only, "RS256")  # a client should accept


def test_kid_absent_with_several_published_keys(op: RogueProvider) -> None:
    op.apply("rp-id_token-kid-absent-multiple-jwks")
    login = Login(op)
    id_token = login.id_token(op)
    header, _, _ = decode_unverified(id_token)
    assert "kid" not in header and header["alg"] == "RS256"
    jwks = served_jwks(op)
    assert [key["kty"] for key in jwks["keys"]].count("RSA") == 2
    assert len(jwks["keys"]) == 3
    rsa_keys = [RSAKey.import_key(key) for key in jwks["keys"] if key["kty"] == "RSA"]
    assert [signature_verifies(id_token, key, "RS256") for key in rsa_keys] == [True, False]


def test_unknown_kid_is_never_published(op: RogueProvider) -> None:
    op.apply("unknown-kid")
    login = Login(op)
    id_token = login.id_token(op)
    header, _, _ = decode_unverified(id_token)
    assert header["kid"] == op.other_key.kid
    for _ in range(2):  # a refetch does not help
        assert op.other_key.kid not in {key["kid"] for key in served_jwks(op)["keys"]}
    assert signature_verifies(id_token, public(op.other_key), "RS256")
    with pytest.raises(JoseError):
        verify(op, id_token, login.nonce)


@pytest.mark.parametrize("keep_old", [False, True])
def test_key_rotation(op: RogueProvider, keep_old: bool) -> None:
    first = Login(op)
    first_token = first.id_token(op)
    old_kid = decode_unverified(first_token)[0]["kid"]
    verify(op, first_token, first.nonce)
    cached = served_jwks(op)

    if keep_old:
        op.rotate(keep_old=True)
    else:
        op.apply("rp-key-rotation-op-sign-key")
    second = Login(op)
    second_token = second.id_token(op)
    new_kid = decode_unverified(second_token)[0]["kid"]
    assert new_kid == op.rsa_key.kid != old_kid
    assert new_kid not in {key["kid"] for key in cached["keys"]}
    with pytest.raises(JoseError):  # a client that never refetches fails here
        jwt.decode(second_token, KeySet.import_key_set(cast(Any, cached)), algorithms=ID_TOKEN_ALGS)
    kids = {key["kid"] for key in served_jwks(op)["keys"]}
    assert new_kid in kids
    assert (old_kid in kids) is keep_old
    verify(op, second_token, second.nonce)


def test_id_token_claims_and_header_hooks(op: RogueProvider) -> None:
    op.id_token_claims = lambda claims: {**claims, "azp": "x", "aud": [claims["aud"][0], "y"]}
    op.id_token_header = {"typ": None, "cty": "JWT"}
    login = Login(op)
    header, claims, _ = decode_unverified(login.id_token(op))
    assert header == {"alg": "RS256", "kid": op.rsa_key.kid, "cty": "JWT"}
    assert claims["aud"] == [op.client_id, "y"] and claims["azp"] == "x"


def test_a_header_can_lie_about_the_algorithm(op: RogueProvider) -> None:
    op.sign_with = "es256"
    op.id_token_header = {"alg": "RS256", "kid": op.rsa_key.kid}
    id_token = Login(op).id_token(op)
    header, _, signature = decode_unverified(id_token)
    assert header["alg"] == "RS256" and len(signature) == 64
    with pytest.raises(JoseError):
        jwt.decode(id_token, served_keys(op), algorithms=ID_TOKEN_ALGS)


def test_sign_helper_mints_arbitrary_tokens(op: RogueProvider) -> None:
    token = op.sign({"iss": op.issuer, "x": 1}, sign_with="es256", omit_kid=True)
    header, claims, _ = decode_unverified(token)
    assert header == {"alg": "ES256", "typ": "JWT"} and claims == {"iss": op.issuer, "x": 1}
    assert signature_verifies(token, public(op.ec_key), "ES256")
    other = op.sign({"x": 2}, sign_with="other-key")  # the KeySet has unpublished keys too
    assert jwt.decode(other, op.verification_keys(), algorithms=["RS256"]).claims["x"] == 2
    with pytest.raises(ValueError, match="sign_with"):
        op.sign({}, sign_with="rot13")


# --- the token endpoint -----------------------------------------------------------------


def token_form(op: RogueProvider, login: Login, **changes: str | None) -> dict[str, str]:
    form = {
        "grant_type": "authorization_code",
        "code": login.params["code"],
        "redirect_uri": DEFAULT_REDIRECT_URI,
        "code_verifier": login.verifier,
    }
    for name, value in changes.items():
        if value is None:
            form.pop(name)
        else:
            form[name] = value
    return form


def basic(op: RogueProvider) -> tuple[str, str]:
    assert op.client_secret is not None
    return (op.client_id, op.client_secret)


@pytest.mark.parametrize(
    ("changes", "description"),
    [
        ({"code_verifier": "x" * 48}, "PKCE verification failed"),
        ({"code_verifier": None}, "code_verifier missing"),
        ({"redirect_uri": "http://127.0.0.1:5000/other"}, "redirect_uri"),
        ({"code": "not-a-code"}, "unknown"),
    ],
    ids=["pkce-mismatch", "pkce-missing", "redirect-uri", "unknown-code"],
)
def test_token_endpoint_refuses_a_bad_grant(
    op: RogueProvider, changes: dict[str, str | None], description: str
) -> None:
    login = Login(op)
    response = post(op.token_endpoint, data=token_form(op, login, **changes), auth=basic(op))
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_grant"
    assert description in body["error_description"]
    assert op.last_token.error == "invalid_grant"


def test_pkce_mismatch_through_authlib_is_invalid_grant(op: RogueProvider) -> None:
    login = Login(op)
    login.verifier = generate_token(48)
    with pytest.raises(Exception, match="invalid_grant"):
        login.fetch_token(op)
    assert op.last_token.error == "invalid_grant"


def test_a_code_works_once(op: RogueProvider) -> None:
    login = Login(op)
    assert post(op.token_endpoint, data=token_form(op, login), auth=basic(op)).status_code == 200
    again = post(op.token_endpoint, data=token_form(op, login), auth=basic(op))
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_client_authentication_is_checked(op: RogueProvider) -> None:
    login = Login(op)
    wrong = post(op.token_endpoint, data=token_form(op, login), auth=(op.client_id, "wrong"))
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    login = Login(op)
    as_post = post(
        op.token_endpoint,
        data={**token_form(op, login), "client_id": op.client_id, "client_secret": CLIENT_SECRET},
    )
    assert as_post.status_code == 401
    assert "must authenticate with client_secret_basic" in as_post.json()["error_description"]
    assert op.last_token.client_auth == "client_secret_post"
    anonymous = post(op.token_endpoint, data={**token_form(op, login), "client_id": op.client_id})
    assert anonymous.status_code == 401 and op.last_token.client_auth == "none"


def test_client_secret_post_client(op: RogueProvider) -> None:
    op.register_client("poster", client_secret="p" * 40, auth_method="client_secret_post")
    session = oauth_session(
        op,
        client_id="poster",
        client_secret="p" * 40,
        token_endpoint_auth_method="client_secret_post",
    )
    login = Login(op, session)
    token = login.fetch_token(op)
    assert op.last_token.client_auth == "client_secret_post"
    assert op.last_token.authorization is None
    assert decode_unverified(token["id_token"])[1]["aud"] == ["poster"]


def test_token_response_hook(op: RogueProvider) -> None:
    op.token_response = lambda body: {**body, "token_type": "mac", "id_token": None}
    login = Login(op)
    body = post(op.token_endpoint, data=token_form(op, login), auth=basic(op)).json()
    assert body["token_type"] == "mac" and body["id_token"] is None


# --- private_key_jwt ----------------------------------------------------------------------


@pytest.fixture
def jwt_client(op: RogueProvider) -> RSAKey:
    key = RSAKey.generate_key(2048, parameters={"kid": "client-key-1"})
    op.register_client("signer", auth_method="private_key_jwt", jwks=key)
    return key


def test_private_key_jwt_client_authentication_is_verified(
    op: RogueProvider, jwt_client: RSAKey
) -> None:
    assert "d" not in op.clients["signer"].jwks["keys"][0]  # type: ignore[index]
    session = oauth_session(
        op,
        client_id="signer",
        client_secret=jwt_client,
        token_endpoint_auth_method="private_key_jwt",
    )
    session.register_client_auth_method(PrivateKeyJWT(op.token_endpoint))
    login = Login(op, session)
    token = login.fetch_token(op)
    assert token["id_token"]
    record = op.last_token
    assert record.status == 200
    assert record.client_auth == "private_key_jwt" and record.assertion_verified
    assert record.client_id == "signer"
    assert record.assertion_header is not None and record.assertion_header["alg"] == "RS256"
    assert record.assertion_claims is not None
    assert record.assertion_claims["iss"] == record.assertion_claims["sub"] == "signer"
    assert record.assertion_claims["aud"] == op.token_endpoint
    assert record.assertion_claims["jti"] in op.used_jtis
    assert record.form["client_assertion_type"] == ASSERTION_TYPE


def assertion_post(op: RogueProvider, login: Login, assertion: str) -> requests.Response:
    form = {
        **token_form(op, login),
        "client_id": "signer",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    return post(op.token_endpoint, data=form)


def signer_login(op: RogueProvider) -> Login:
    return Login(op, oauth_session(op, client_id="signer", client_secret=None))


def test_private_key_jwt_refuses_a_foreign_key_and_a_replayed_jti(
    op: RogueProvider, jwt_client: RSAKey
) -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "client-key-1"})
    forged = private_key_jwt_sign(stranger, "signer", op.token_endpoint)
    response = assertion_post(op, signer_login(op), forged)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert not op.last_token.assertion_verified
    assert op.last_token.assertion_claims is not None  # recorded even when refused

    assertion = private_key_jwt_sign(jwt_client, "signer", op.token_endpoint)
    assert assertion_post(op, signer_login(op), assertion).status_code == 200
    replay = assertion_post(op, signer_login(op), assertion)
    assert replay.status_code == 401 and "replayed" in replay.json()["error_description"]

    wrong_aud = private_key_jwt_sign(jwt_client, "signer", "http://127.0.0.1:1/token")
    response = assertion_post(op, signer_login(op), wrong_aud)
    assert response.status_code == 401 and "aud" in response.json()["error_description"]


def test_a_secret_client_cannot_switch_to_private_key_jwt(
    op: RogueProvider, jwt_client: RSAKey
) -> None:
    login = Login(op)
    assertion = private_key_jwt_sign(jwt_client, op.client_id, op.token_endpoint)
    form = {
        **token_form(op, login),
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    response = post(op.token_endpoint, data=form)
    assert response.status_code == 401
    assert op.last_token.client_auth == "private_key_jwt"


# --- userinfo, plain OAuth 2.0 profile, logout ------------------------------------------


def test_userinfo_bad_sub_and_bearer_checks(op: RogueProvider) -> None:
    op.apply("rp-userinfo-bad-sub-claim")
    login = Login(op)
    token = login.fetch_token(op)
    id_claims = decode_unverified(token["id_token"])[1]
    userinfo = login.session.get(op.userinfo_endpoint).json()
    assert userinfo["sub"] == "E9999" != id_claims["sub"]
    assert userinfo["email"] == id_claims["email"]
    anonymous = get(op.userinfo_endpoint)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    bogus = get(op.userinfo_endpoint, headers={"Authorization": "Bearer nope"})
    assert bogus.status_code == 401
    assert [r.status for r in op.userinfo_requests] == [200, 401, 401]


def test_plain_oauth2_profile_without_an_id_token(op: RogueProvider) -> None:
    login = Login(op, oauth_session(op, scope="profile"))
    token = login.fetch_token(op)
    assert "id_token" not in token
    assert token["scope"] == "profile"
    profile = login.session.get(op.profile_endpoint)
    assert profile.status_code == 200
    assert profile.json() == {
        "id": "E1001",
        "mail": "ada@acme.example",
        "dept": "Engineering",
        "name": "Ada Lovelace",
        "firstName": "Ada",
        "lastName": "Lovelace",
    }
    assert login.session.get(op.userinfo_endpoint).status_code == 403  # no openid scope
    op.profile_claims = {"mail": None, "id": "E2000"}
    changed = login.session.get(op.profile_endpoint).json()
    assert changed["id"] == "E2000" and "mail" not in changed
    assert get(op.profile_endpoint).status_code == 401
    assert op.profile_requests[-1].status == 401


def test_logout_redirects_back_with_state(op: RogueProvider) -> None:
    response = get(
        op.end_session_endpoint,
        params={
            "id_token_hint": "abc",
            "post_logout_redirect_uri": "http://127.0.0.1:5000/signed-out",
            "state": "s-1",
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "http://127.0.0.1:5000/signed-out?state=s-1"
    assert op.logout_requests[-1]["id_token_hint"] == "abc"
    assert get(op.end_session_endpoint).status_code == 200


# --- the harness itself --------------------------------------------------------------------


def test_a_broken_override_is_reported_not_hidden() -> None:
    with RogueProvider() as provider:

        def broken(claims: dict[str, Any]) -> dict[str, Any]:
            raise ZeroDivisionError("a bug in a test's override")

        provider.id_token_claims = broken
        login = Login(provider)
        response = post(
            provider.token_endpoint, data=token_form(provider, login), auth=basic(provider)
        )
        assert response.status_code == 500
        with pytest.raises(RogueProviderError, match="ZeroDivisionError"):
            provider.check()
    with pytest.raises(requests.ConnectionError):
        get(provider.discovery_url)
    provider.stop()  # idempotent
