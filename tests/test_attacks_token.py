"""Every way to forge, bend or reuse a handoff token, each refused with its reason code.

The connector-level tests pin the reason; the web-level ones check what the
person and the admin get: the refusal page, an audit event, no account, no session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import func, select

from sso_bridge import errors
from sso_bridge.connectors.token import TokenConnector
from sso_bridge.models import AuditEvent, User
from sso_bridge.settings import Settings
from sso_bridge.state import MemoryStore, RedisStore

from .conftest import BASE_URL, Minter


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(
    header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes] | None = None
) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64(signature)}"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    data = {
        "iss": "acme-portal",
        "aud": f"{BASE_URL}/token/acme",
        "sub": "E1001",
        "iat": now,
        "exp": now + 60,
        "jti": uuid.uuid4().hex,
    }
    data.update(overrides)
    return data


@pytest.fixture
def connector(settings: Settings) -> TokenConnector:
    return TokenConnector(
        "acme",
        settings.connections["acme"],
        BASE_URL,
        MemoryStore(),
        settings.limits.max_token_bytes,
    )


def refused(connector: TokenConnector, token: str) -> str:
    with pytest.raises(errors.BridgeError) as info:
        connector.verify(token)
    return info.value.code


def split(token: str) -> list[str]:
    return token.split(".")


# -- algorithms ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_in_any_case_is_refused(connector: TokenConnector, alg: str) -> None:
    token = raw_token({"alg": alg, "typ": "handoff+jwt", "kid": "ed-1"}, claims())
    assert refused(connector, token) == "token_alg_forbidden"


def test_alg_outside_the_connections_allow_list(settings: Settings, mint: Minter) -> None:
    globex = TokenConnector("globex", settings.connections["globex"], BASE_URL, MemoryStore(), 8192)
    token = mint(key="hs", connection="globex")
    assert refused(globex, token) == "token_alg_forbidden"


@pytest.mark.parametrize("alg", ["HS384", "RS512", "PS256", "ES512", "EdDSA25519"])
def test_unlisted_algorithms_are_refused(connector: TokenConnector, alg: str) -> None:
    token = raw_token(
        {"alg": alg, "typ": "handoff+jwt", "kid": "ed-1"}, claims(), lambda _: b"x" * 64
    )
    assert refused(connector, token) == "token_alg_forbidden"


def test_hs256_signed_with_the_public_key_as_secret(connector: TokenConnector, keys: Any) -> None:
    # The classic key-confusion attack: the RSA public key is public, so if the verifier
    # let the token pick HS256 it would accept an HMAC made with it.
    public_pem = keys.public["rsa"].read_bytes()
    for kid in ("rsa-1", "ed-1", "ec-1"):
        token = raw_token(
            {"alg": "HS256", "typ": "handoff+jwt", "kid": kid},
            claims(),
            lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
        )
        assert refused(connector, token) == "token_alg_key_mismatch"


def test_alg_switched_between_asymmetric_keys(connector: TokenConnector, mint: Minter) -> None:
    token = mint(key="ec", kid="ed-1")
    assert refused(connector, token) == "token_alg_key_mismatch"


# -- signatures ------------------------------------------------------------------------


def test_empty_signature(connector: TokenConnector, mint: Minter) -> None:
    header, payload, _ = split(mint())
    assert refused(connector, f"{header}.{payload}.") == "token_signature_invalid"


@pytest.mark.parametrize("key", ["ed", "ec", "rsa", "hs"])
def test_truncated_signature(connector: TokenConnector, mint: Minter, key: str) -> None:
    header, payload, signature = split(mint(key=key))
    assert refused(connector, f"{header}.{payload}.{signature[:-8]}") == "token_signature_invalid"


@pytest.mark.parametrize("key", ["ed", "ec", "rsa", "hs"])
def test_tampered_payload(connector: TokenConnector, mint: Minter, key: str) -> None:
    header, _, signature = split(mint(key=key))
    forged = b64(json.dumps(claims(sub="E0001-ceo")).encode())
    assert refused(connector, f"{header}.{forged}.{signature}") == "token_signature_invalid"


def test_signed_by_another_key_under_a_known_kid(connector: TokenConnector, mint: Minter) -> None:
    token = mint(key="other-ed", kid="ed-1")
    assert refused(connector, token) == "token_signature_invalid"


# -- header parameters that try to choose the key -----------------------------------------


def _attacker_signed(header: dict[str, Any]) -> str:
    attacker = ed25519.Ed25519PrivateKey.generate()
    return raw_token(header, claims(), attacker.sign)


def test_embedded_jwk_is_refused(connector: TokenConnector) -> None:
    attacker = ed25519.Ed25519PrivateKey.generate()
    from joserfc.jwk import OKPKey

    jwk = OKPKey.import_key(attacker.public_key()).as_dict()
    token = raw_token(
        {"alg": "EdDSA", "typ": "handoff+jwt", "kid": "ed-1", "jwk": jwk}, claims(), attacker.sign
    )
    assert refused(connector, token) == "token_header_forbidden"


class _Recorder(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"keys": []}')

    def log_message(self, *args: Any) -> None:
        return None


@pytest.mark.parametrize("param", ["jku", "x5u"])
def test_key_urls_are_refused_and_never_fetched(connector: TokenConnector, param: str) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.hits.clear()
    try:
        url = f"http://127.0.0.1:{server.server_port}/keys.json"
        token = _attacker_signed({"alg": "EdDSA", "typ": "handoff+jwt", "kid": "ed-1", param: url})
        assert refused(connector, token) == "token_header_forbidden"
        assert _Recorder.hits == []
    finally:
        server.shutdown()


@pytest.mark.parametrize("param", ["x5c", "crit", "b64"])
def test_other_processing_headers_are_refused(connector: TokenConnector, param: str) -> None:
    token = _attacker_signed({"alg": "EdDSA", "typ": "handoff+jwt", "kid": "ed-1", param: ["x"]})
    assert refused(connector, token) == "token_header_forbidden"


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../etc/passwd",
        "..\\..\\keys\\ed-1",
        "/dev/null",
        "ed-1' OR '1'='1",
        'ed-1"; DROP TABLE users; --',
        "ed-1\x00",
        "ed 1",
        "",
        "a" * 129,
        "${jndi:ldap://x/a}",
    ],
)
def test_kid_traversal_and_injection_strings(connector: TokenConnector, kid: str) -> None:
    token = _attacker_signed({"alg": "EdDSA", "typ": "handoff+jwt", "kid": kid})
    assert refused(connector, token) == "token_kid_invalid"


@pytest.mark.parametrize("kid", [7, None, ["ed-1"], {"k": "ed-1"}])
def test_kid_of_the_wrong_type(connector: TokenConnector, kid: Any) -> None:
    header: dict[str, Any] = {"alg": "EdDSA", "typ": "handoff+jwt", "kid": kid}
    expected = "token_kid_missing" if kid is None else "token_kid_invalid"
    assert refused(connector, _attacker_signed(header)) == expected


def test_missing_and_unknown_kid(connector: TokenConnector) -> None:
    assert (
        refused(connector, _attacker_signed({"alg": "EdDSA", "typ": "handoff+jwt"}))
        == "token_kid_missing"
    )
    assert (
        refused(connector, _attacker_signed({"alg": "EdDSA", "typ": "handoff+jwt", "kid": "ed-2"}))
        == "token_kid_unknown"
    )


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "at+jwt", "handoff+jwt2", 1])
def test_wrong_or_missing_typ(connector: TokenConnector, typ: Any) -> None:
    header: dict[str, Any] = {"alg": "EdDSA", "kid": "ed-1"}
    if typ is not None:
        header["typ"] = typ
    assert refused(connector, _attacker_signed(header)) == "token_typ_invalid"


def test_typ_accepts_the_registered_spellings(connector: TokenConnector, keys: Any) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    private = load_pem_private_key(keys.private["ed"].read_bytes(), None)
    for typ in ("handoff+jwt", "application/handoff+jwt", "Handoff+JWT"):
        token = raw_token({"alg": "EdDSA", "typ": typ, "kid": "ed-1"}, claims(), private.sign)
        assert connector.verify(token)["sub"] == "E1001"


# -- time ------------------------------------------------------------------------------


def test_expired_and_the_leeway_boundary(connector: TokenConnector, mint: Minter) -> None:
    now = int(time.time())
    # leeway is 30 s: 20 s after exp is still accepted, 40 s after is not.
    assert connector.verify(mint(iat=now - 80, exp=now - 20))["sub"] == "E1001"
    assert refused(connector, mint(iat=now - 100, exp=now - 40)) == "token_expired"


def test_not_yet_valid(connector: TokenConnector, mint: Minter) -> None:
    now = int(time.time())
    assert refused(connector, mint(iat=now + 100, exp=now + 150)) == "token_not_yet_valid"
    assert refused(connector, mint(nbf=now + 100)) == "token_not_yet_valid"
    assert connector.verify(mint(iat=now + 20, exp=now + 80))["sub"] == "E1001"


def test_lifetime_over_the_cap(connector: TokenConnector, mint: Minter) -> None:
    now = int(time.time())
    assert refused(connector, mint(iat=now, exp=now + 121)) == "token_lifetime_exceeded"
    assert connector.verify(mint(iat=now, exp=now + 120))["sub"] == "E1001"


def test_exp_before_iat(connector: TokenConnector, mint: Minter) -> None:
    now = int(time.time())
    assert refused(connector, mint(iat=now, exp=now - 1)) == "token_claim_invalid"


@pytest.mark.parametrize("name", ["exp", "iat", "jti", "sub", "iss", "aud"])
def test_missing_required_claim(connector: TokenConnector, mint: Minter, name: str) -> None:
    with pytest.raises(errors.MissingClaim) as info:
        connector.verify(mint(drop=(name,)))
    assert info.value.context["claim"] == name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("exp", "tomorrow"),
        ("iat", True),
        ("sub", ""),
        ("sub", 1001),
        ("jti", ""),
        ("jti", "x" * 257),
        ("iss", ["acme-portal"]),
    ],
)
def test_claims_of_the_wrong_type(
    connector: TokenConnector, mint: Minter, name: str, value: Any
) -> None:
    assert refused(connector, mint(**{name: value})) == "token_claim_invalid"


# -- who the token is for ------------------------------------------------------------


@pytest.mark.parametrize(
    "aud",
    [
        f"{BASE_URL}/token/globex",
        f"{BASE_URL}/token/acme/",
        f"{BASE_URL}/token/acm",
        f"{BASE_URL}/token/acme?x=1",
        "acme",
        BASE_URL,
        [f"{BASE_URL}/token/acme", "other"],
        [],
    ],
)
def test_wrong_audience(connector: TokenConnector, mint: Minter, aud: Any) -> None:
    assert refused(connector, mint(aud=aud)) == "token_audience_mismatch"


def test_audience_as_a_one_element_list_is_accepted(
    connector: TokenConnector, mint: Minter
) -> None:
    assert connector.verify(mint(aud=[f"{BASE_URL}/token/acme"]))["sub"] == "E1001"


@pytest.mark.parametrize("iss", ["globex-portal", "acme-portal ", "ACME-PORTAL", "acme"])
def test_wrong_issuer(connector: TokenConnector, mint: Minter, iss: str) -> None:
    assert refused(connector, mint(iss=iss)) == "token_issuer_mismatch"


def test_token_for_connection_a_posted_to_b(settings: Settings, mint: Minter) -> None:
    globex = TokenConnector("globex", settings.connections["globex"], BASE_URL, MemoryStore(), 8192)
    # Same key, same issuer claim as globex expects: only the audience gives it away.
    token = mint(iss="globex-portal", aud=f"{BASE_URL}/token/acme")
    assert refused(globex, token) == "token_audience_mismatch"


# -- shape and size --------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "not base64!.e30.sig",
        "e30.e30.sig",
        "W10.e30.c2ln",
    ],
)
def test_malformed_tokens(connector: TokenConnector, token: str) -> None:
    assert refused(connector, token) == "token_malformed"


def test_header_without_alg_is_malformed(connector: TokenConnector) -> None:
    assert refused(connector, f"{b64(b'{}')}.{b64(b'{}')}.c2ln") == "token_malformed"


def test_duplicate_header_members(connector: TokenConnector, mint: Minter) -> None:
    _, payload, signature = split(mint())
    header = b64(b'{"alg":"EdDSA","typ":"handoff+jwt","kid":"ed-1","alg":"none"}')
    assert refused(connector, f"{header}.{payload}.{signature}") == "token_malformed"


def test_oversized_token(connector: TokenConnector, mint: Minter) -> None:
    token = mint(padding="x" * 9000)
    assert refused(connector, token) == "token_too_large"


# -- replay ------------------------------------------------------------------------------


def test_replay_is_refused(connector: TokenConnector, mint: Minter) -> None:
    token = mint()
    assert connector.verify(token)["sub"] == "E1001"
    assert refused(connector, token) == "token_replayed"


def test_a_refused_token_does_not_burn_its_jti(connector: TokenConnector, mint: Minter) -> None:
    jti = uuid.uuid4().hex
    assert refused(connector, mint(jti=jti, aud="elsewhere")) == "token_audience_mismatch"
    assert connector.verify(mint(jti=jti))["jti"] == jti


def test_replay_across_instances_on_one_redis(
    settings: Settings, mint: Minter, redis_server: Any
) -> None:
    prefix = f"replay-{uuid.uuid4().hex}:"
    first, second = (
        TokenConnector(
            "acme",
            settings.connections["acme"],
            BASE_URL,
            RedisStore(redis_server.url, prefix=prefix),
            8192,
        )
        for _ in range(2)
    )
    token = mint()
    assert first.verify(token)["sub"] == "E1001"
    assert refused(second, token) == "token_replayed"


# -- through the web layer ---------------------------------------------------------------


def _counts(app: Any) -> tuple[int, list[str]]:
    with app.extensions["sso_bridge"].db.session() as session:
        users = session.scalar(select(func.count()).select_from(User)) or 0
        reasons = list(session.scalars(select(AuditEvent.reason).order_by(AuditEvent.id)))
    return users, reasons


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda t: t.rsplit(".", 1)[0] + ".", "token_signature_invalid"),
        (
            lambda t: raw_token({"alg": "none", "typ": "handoff+jwt", "kid": "ed-1"}, claims()),
            "token_alg_forbidden",
        ),
        (lambda t: "x" * 9000, "token_too_large"),
    ],
)
def test_refusal_page_audit_and_nothing_provisioned(
    app: Any, client: Any, mint: Minter, tamper: Callable[[str], str], reason: str
) -> None:
    response = client.post("/token/acme", data={"token": tamper(mint())})
    assert 400 <= response.status_code < 500
    page = response.get_data(as_text=True)
    assert reason in page
    correlation = response.headers["X-Correlation-ID"]
    assert correlation in page
    assert "Set-Cookie" not in response.headers
    users, reasons = _counts(app)
    assert users == 0
    assert reasons == [reason]


def test_replay_through_a_second_app_on_the_same_redis(
    make_settings: Callable[..., Settings], mint: Minter, redis_server: Any
) -> None:
    from .conftest import build_app

    redis_server.flush()
    settings = make_settings(store={"url": redis_server.url})
    first, second = build_app(settings), build_app(settings)
    token = mint()
    assert first.test_client().post("/token/acme", data={"token": token}).status_code == 303
    response = second.test_client().post("/token/acme", data={"token": token})
    assert response.status_code == 400
    assert "token_replayed" in response.get_data(as_text=True)
    assert _counts(second)[1][-1] == "token_replayed"


def test_get_is_refused_unless_enabled(client: Any, mint: Minter) -> None:
    response = client.get("/token/acme", query_string={"token": mint()})
    assert response.status_code == 405
    assert "method_not_allowed" in response.get_data(as_text=True)


def test_unknown_connection(client: Any, mint: Minter) -> None:
    response = client.post("/token/nope", data={"token": mint()})
    assert response.status_code == 404
    assert "unknown_connection" in response.get_data(as_text=True)


def test_request_body_over_the_limit(client: Any) -> None:
    response = client.post("/token/acme", data={"token": "x" * 600_000})
    assert response.status_code == 413
    assert "request_too_large" in response.get_data(as_text=True)


@pytest.mark.parametrize("param", ["foo", "iss", "cty", "enc", "zip", "x5t#S256"])
def test_any_other_header_parameter_is_named_and_refused(
    connector: TokenConnector, param: str
) -> None:
    token = _attacker_signed({"alg": "EdDSA", "typ": "handoff+jwt", "kid": "ed-1", param: "x"})
    with pytest.raises(errors.ForbiddenHeader) as info:
        connector.verify(token)
    assert param in info.value.detail


def test_a_trailing_newline_is_not_a_valid_kid_or_segment(
    connector: TokenConnector, mint: Minter
) -> None:
    token = _attacker_signed({"alg": "EdDSA", "typ": "handoff+jwt", "kid": "ed-1\n"})
    assert refused(connector, token) == "token_kid_invalid"
    assert refused(connector, mint() + "\n") == "token_malformed"


def test_an_attribute_error_does_not_burn_the_jti(connector: TokenConnector, mint: Minter) -> None:
    jti = uuid.uuid4().hex
    with pytest.raises(errors.InvalidAttribute):
        connector.complete({"token": mint(jti=jti, email="not-an-address")})
    assert connector.complete({"token": mint(jti=jti)}).identity.subject == "E1001"
    with pytest.raises(errors.ReplayedToken):
        connector.complete({"token": mint(jti=jti)})


@pytest.mark.parametrize(
    "payload",
    [
        b'{"exp": NaN}',
        b'{"exp": Infinity}',
        b'{"sub": "E1001", "sub": "E0001-ceo"}',
        b'["not", "an", "object"]',
    ],
)
def test_payloads_that_are_not_plain_json_objects(
    connector: TokenConnector, keys: Any, payload: bytes
) -> None:
    secret = keys.hs_secret.read_bytes().strip()
    body = payload
    if payload.startswith(b"{"):
        base = json.dumps(claims())[1:-1].encode()
        body = b"{" + base + b", " + payload[1:]
    header = b64(json.dumps({"alg": "HS256", "typ": "handoff+jwt", "kid": "hs-1"}).encode())
    signing_input = f"{header}.{b64(body)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    assert refused(connector, f"{signing_input}.{b64(signature)}") == "token_malformed"


@pytest.mark.parametrize(
    ("claim_overrides", "form", "reason"),
    [
        ({"jti": "fixed"}, {}, "token_replayed"),
        ({"iat": int(time.time()) - 200, "exp": int(time.time()) - 100}, {}, "token_expired"),
        ({"aud": "https://elsewhere.example/token/acme"}, {}, "token_audience_mismatch"),
        ({}, {"next": "https://evil.example/"}, "next_not_allowed"),
        ({"employment_status": "terminated"}, {}, "user_blocked"),
        ({"email": "not-an-address"}, {}, "attribute_invalid"),
    ],
)
def test_web_refusals_audit_and_provision_nothing(
    app: Any,
    client: Any,
    mint: Minter,
    claim_overrides: dict[str, Any],
    form: dict[str, str],
    reason: str,
) -> None:
    if reason == "token_replayed":
        # The jti was used by another login (another person, another browser).
        first = mint(jti="fixed", sub="E9")
        assert app.test_client().post("/token/acme", data={"token": first}).status_code == 303
    response = client.post("/token/acme", data={"token": mint(**claim_overrides), **form})
    assert 400 <= response.status_code < 500
    assert reason in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    users, reasons = _counts(app)
    assert reasons[-1] == reason
    assert users == (1 if reason == "token_replayed" else 0)


def test_session_fixation_a_planted_session_id_is_replaced(
    app: Any, client: Any, mint: Minter
) -> None:
    services = app.extensions["sso_bridge"]
    planted = services.sessions.create(999, "planted", "acme", "E999")
    client.set_cookie(services.settings.session_cookie, planted.sid)
    response = client.post("/token/acme", data={"token": mint()})
    assert response.status_code == 303
    new_sid = client.get_cookie(services.settings.session_cookie).value
    assert new_sid != planted.sid
    assert services.sessions.get(planted.sid) is None
    assert services.sessions.get(new_sid).subject == "E1001"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://127.0.0.1:5000", True),  # the origin of portal_url
        (None, True),  # no page to forge from (a server-side client)
        ("https://evil.example", False),
        ("null", False),
        ("http://127.0.0.1:5001", False),
    ],
)
def test_tokens_are_accepted_only_from_the_portals_origin(
    app: Any, client: Any, mint: Minter, origin: str | None, allowed: bool
) -> None:
    headers = {"Origin": origin} if origin else {}
    response = client.post("/token/acme", data={"token": mint()}, headers=headers)
    if allowed:
        assert response.status_code == 303
    else:
        assert response.status_code == 403
        assert "origin_not_allowed" in response.get_data(as_text=True)
        assert _counts(app) == (0, ["origin_not_allowed"])


def test_rate_limit_per_client_and_connection(
    make_settings: Callable[..., Settings], mint: Minter
) -> None:
    from .conftest import build_app

    app = build_app(make_settings(limits={"logins_per_minute": 3}))
    client = app.test_client()
    statuses = [client.post("/token/acme", data={"token": "a.b.c"}).status_code for _ in range(6)]
    assert statuses == [400, 400, 400, 429, 429, 429]
    # Another client address has its own budget.
    other = client.post(
        "/token/acme", data={"token": mint()}, environ_base={"REMOTE_ADDR": "10.9.8.7"}
    )
    assert other.status_code == 303
    # Only the first refusal over the limit is audited.
    assert _counts(app)[1].count("rate_limited") == 1


def test_refusals_before_any_route_are_audited(app: Any, client: Any) -> None:
    assert client.put("/token/acme", data={"token": "x"}).status_code == 405
    assert client.post("/token/nope", data={"token": "x"}).status_code == 404
    assert _counts(app)[1] == ["method_not_allowed", "unknown_connection"]
