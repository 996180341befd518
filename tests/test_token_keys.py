"""The keys a portal signs with: files, inline JWKS, and a JWKS URL that is cached and refetched."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import OctKey, OKPKey

from sso_bridge import errors
from sso_bridge.connectors.token import TokenConnector
from sso_bridge.connectors.token_keys import KeyConfigError, TokenKeyring, load_file_key
from sso_bridge.jwks import PinnedKey
from sso_bridge.keyfiles import generate_private_key, write_public_key
from sso_bridge.settings import TokenConnection, TokenKeySettings
from sso_bridge.state import MemoryStore

from .conftest import BASE_URL, Keys


class JwksServer:
    """A portal's JWKS endpoint whose document and availability the test controls."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.hits = 0
        self.status = 200
        self.delay = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                time.sleep(owner.delay)
                body = json.dumps(owner.document).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, *public_pems: tuple[str, Path]) -> None:
        keys = []
        for kid, path in public_pems:
            jwk = OKPKey.import_key(path.read_bytes()).as_dict()
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "EdDSA"})
        self.document = {"keys": keys}


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.server.shutdown()


def connection(url: str, **extra: Any) -> TokenConnection:
    return TokenConnection(type="token", issuer="acme-portal", jwks_url=url, **extra)


def test_fetched_once_then_cached(jwks: JwksServer, keys: Keys) -> None:
    jwks.publish(("ed-1", keys.public["ed"]))
    ring = TokenKeyring("acme", connection(jwks.url), MemoryStore())
    assert ring.find("ed-1") is not None
    assert ring.find("ed-1") is not None
    assert jwks.hits == 1


def test_unknown_kid_refetches_once_per_interval(jwks: JwksServer, keys: Keys) -> None:
    jwks.publish(("ed-1", keys.public["ed"]))
    ring = TokenKeyring("acme", connection(jwks.url, jwks_refetch_interval=60), MemoryStore())
    assert ring.find("ed-1") is not None
    # A flood of random kids costs the portal one request, not one per token.
    for n in range(20):
        assert ring.find(f"random-{n}") is None
    assert jwks.hits == 2


def test_a_rotated_key_is_accepted_after_the_refetch(
    jwks: JwksServer, keys: Keys, mint: Any
) -> None:
    jwks.publish(("ed-1", keys.public["ed"]))
    store = MemoryStore()
    settings = connection(jwks.url)
    connector = TokenConnector("acme", settings, BASE_URL, store, 8192)
    assert connector.verify(mint())["sub"] == "E1001"
    jwks.publish(("ed-1", keys.public["ed"]), ("ed-2", keys.public["other-ed"]))
    assert connector.verify(mint(key="other-ed", kid="ed-2"))["sub"] == "E1001"
    assert jwks.hits == 2


def test_unreachable_jwks_refuses_unknown_kids_but_cached_keys_still_work(
    jwks: JwksServer, keys: Keys
) -> None:
    jwks.publish(("ed-1", keys.public["ed"]))
    ring = TokenKeyring("acme", connection(jwks.url), MemoryStore())
    assert ring.find("ed-1") is not None
    jwks.status = 503
    with pytest.raises(errors.KeySetUnavailable):
        ring.find("ed-2")
    assert ring.find("ed-1") is not None


def test_a_portal_that_is_down_at_first_use(jwks: JwksServer) -> None:
    jwks.status = 500
    ring = TokenKeyring("acme", connection(jwks.url), MemoryStore())
    with pytest.raises(errors.KeySetUnavailable) as info:
        ring.find("ed-1")
    assert info.value.status == 503


def test_private_and_symmetric_keys_in_a_jwks_are_ignored(jwks: JwksServer, keys: Keys) -> None:
    private = OKPKey.generate_key("Ed25519").as_dict(private=True)
    secret = OctKey.generate_key(256).as_dict(private=True)
    jwks.document = {"keys": [{**private, "kid": "leaked"}, {**secret, "kid": "shared"}]}
    ring = TokenKeyring("acme", connection(jwks.url), MemoryStore())
    assert ring.find("leaked") is None
    assert ring.find("shared") is None


def test_an_oversized_jwks_is_refused(jwks: JwksServer) -> None:
    jwks.document = {"keys": [], "padding": "x" * 70_000}
    ring = TokenKeyring("acme", connection(jwks.url), MemoryStore())
    with pytest.raises(errors.KeySetUnavailable):
        ring.find("ed-1")


def test_inline_jwks_pins_the_algorithm_from_the_key_type(keys: Keys) -> None:
    jwk = {**OKPKey.import_key(keys.public["ed"].read_bytes()).as_dict(), "kid": "inline-1"}
    ring = TokenKeyring(
        "acme", TokenConnection(type="token", issuer="x", jwks={"keys": [jwk]}), MemoryStore()
    )
    key = ring.find("inline-1")
    assert key is not None and key.alg == "EdDSA"


def test_inline_jwks_with_a_disallowed_algorithm_is_left_out(keys: Keys) -> None:
    jwk = {**OKPKey.import_key(keys.public["ed"].read_bytes()).as_dict(), "kid": "inline-1"}
    settings = TokenConnection(type="token", issuer="x", algorithms=["ES256"], jwks={"keys": [jwk]})
    assert TokenKeyring("acme", settings, MemoryStore()).find("inline-1") is None


def test_file_key_must_fit_its_algorithm(keys: Keys) -> None:
    with pytest.raises(KeyConfigError, match="does not fit ES256"):
        load_file_key(TokenKeySettings(kid="k", alg="ES256", public_key_file=keys.public["ed"]))


def test_short_rsa_keys_are_refused(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    write_public_key(tmp_path / "weak.pem", weak.public_key())
    with pytest.raises(KeyConfigError, match="2048"):
        load_file_key(TokenKeySettings(kid="k", alg="RS256", public_key_file=tmp_path / "weak.pem"))


def test_short_hmac_secrets_are_refused(tmp_path: Path) -> None:
    (tmp_path / "short.secret").write_bytes(b"x" * 31)
    with pytest.raises(KeyConfigError, match="32 bytes"):
        load_file_key(TokenKeySettings(kid="k", alg="HS256", secret_file=tmp_path / "short.secret"))


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match=r"nope\.pem"):
        load_file_key(TokenKeySettings(kid="k", alg="EdDSA", public_key_file=tmp_path / "nope.pem"))


def test_generated_keys_load(tmp_path: Path) -> None:
    for kind, alg in (("ed25519", "EdDSA"), ("ec", "ES256"), ("rsa", "RS256")):
        write_public_key(tmp_path / f"{kind}.pem", generate_private_key(kind).public_key())
        spec = TokenKeySettings(kid="k", alg=alg, public_key_file=tmp_path / f"{kind}.pem")
        assert load_file_key(spec).alg == alg


def test_an_unknown_kid_on_an_empty_cache_costs_one_fetch(jwks: JwksServer, keys: Keys) -> None:
    jwks.publish(("ed-1", keys.public["ed"]))
    ring = TokenKeyring("acme", connection(jwks.url), MemoryStore())
    assert ring.find("ed-9") is None
    assert jwks.hits == 1


@pytest.mark.parametrize("status", [200, 503])
def test_requests_that_find_a_fetch_running_wait_for_it(
    jwks: JwksServer, keys: Keys, status: int
) -> None:
    # The first logins after a start: one fetches, the others wait for its result
    # instead of being refused (200), or stop waiting when it fails (503).
    jwks.publish(("ed-1", keys.public["ed"]))
    jwks.status, jwks.delay = status, 0.5
    ring = TokenKeyring("acme", connection(jwks.url, jwks_refetch_interval=3600), MemoryStore())
    outcomes: list[object] = []

    def login() -> None:
        try:
            outcomes.append(ring.find("ed-1"))
        except errors.KeySetUnavailable as exc:
            outcomes.append(exc)

    first = threading.Thread(target=login)
    first.start()
    time.sleep(0.1)  # the first is fetching now
    began = time.monotonic()
    others = [threading.Thread(target=login) for _ in range(5)]
    for thread in others:
        thread.start()
    for thread in (first, *others):
        thread.join(timeout=10)

    assert jwks.hits == 1
    assert len(outcomes) == 6
    if status == 200:
        assert all(isinstance(o, PinnedKey) and o.kid == "ed-1" for o in outcomes), outcomes
    else:
        assert all(isinstance(o, errors.KeySetUnavailable) for o in outcomes), outcomes
    # They waited for the fetch (about 0.4 s more), not for the whole fetch timeout.
    assert time.monotonic() - began < 3


def test_a_redirecting_jwks_url_is_reported_as_such(jwks: JwksServer) -> None:
    jwks.status = 302
    ring = TokenKeyring("acme", connection(jwks.url), MemoryStore())
    with pytest.raises(errors.KeySetUnavailable, match="HTTP 302"):
        ring.find("ed-1")


def test_unsigned_tokens_with_random_kids_cause_no_fetch_flood(jwks: JwksServer) -> None:
    jwks.status = 503
    connector = TokenConnector(
        "acme", connection(jwks.url, jwks_refetch_interval=3600), BASE_URL, MemoryStore(), 8192
    )
    import base64

    def unsigned(kid: str) -> str:
        header = base64.urlsafe_b64encode(
            json.dumps({"alg": "EdDSA", "typ": "handoff+jwt", "kid": kid}).encode()
        ).rstrip(b"=")
        return f"{header.decode()}.e30."

    for n in range(25):
        with pytest.raises(errors.BadSignature):
            connector.verify(unsigned(f"random-{n}"))
    assert jwks.hits == 0


def test_a_failing_portal_is_asked_once_per_interval_while_the_cache_is_empty(
    jwks: JwksServer,
) -> None:
    jwks.status = 503
    ring = TokenKeyring("acme", connection(jwks.url, jwks_refetch_interval=3600), MemoryStore())
    for n in range(10):
        with pytest.raises(errors.KeySetUnavailable):
            ring.find(f"k{n}")
    assert jwks.hits == 1


def test_the_last_good_copy_serves_when_the_portal_fails_after_expiry(
    jwks: JwksServer, keys: Keys
) -> None:
    jwks.publish(("ed-1", keys.public["ed"]))
    store = MemoryStore()
    ring = TokenKeyring("acme", connection(jwks.url), store)
    assert ring.find("ed-1") is not None
    store.delete("jwks:acme")  # the cache expired
    store.delete("jwks-fetch:acme")
    jwks.status = 503
    assert ring.find("ed-1") is not None  # stale-if-error, bounded by jwks_stale_seconds
    store.delete("jwks-last-good:acme")  # ... and past that bound
    store.delete("jwks-fetch:acme")
    with pytest.raises(errors.KeySetUnavailable):
        ring.find("ed-1")


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA", "alg": "ES256"},
        {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA", "alg": "ES256"},
        {"kty": "OKP", "crv": "X25519", "x": "AA"},
    ],
)
def test_unsupported_curves_are_left_out_not_crashed_on(jwks: JwksServer, jwk: Any) -> None:
    jwks.document = {"keys": [{**jwk, "kid": "k"}]}
    ring = TokenKeyring("acme", connection(jwks.url), MemoryStore())
    assert ring.find("k") is None


def test_short_rsa_keys_in_a_jwks_are_left_out(jwks: JwksServer) -> None:
    from joserfc.jwk import RSAKey

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    jwks.document = {"keys": [{**RSAKey.import_key(weak).as_dict(), "kid": "weak"}]}
    assert TokenKeyring("acme", connection(jwks.url), MemoryStore()).find("weak") is None


@pytest.mark.parametrize(
    "url", ["http://portal.example.com/jwks", "file:///etc/passwd", "ftp://portal/jwks"]
)
def test_jwks_url_must_be_https(url: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        connection(url)


def test_fetches_go_through_the_configured_proxy(jwks: JwksServer, keys: Keys) -> None:
    from sso_bridge.services import outbound_session

    # The JWKS server stands in for the proxy: a proxy receives the absolute URL.
    jwks.publish(("ed-1", keys.public["ed"]))
    seen: list[str] = []
    original = jwks.server.RequestHandlerClass.do_GET

    def record(handler: Any) -> None:
        seen.append(handler.path)
        original(handler)

    jwks.server.RequestHandlerClass.do_GET = record  # type: ignore[method-assign]
    unreachable = "http://127.0.0.1:9/portal/jwks.json"
    ring = TokenKeyring(
        "acme",
        connection(unreachable),
        MemoryStore(),
        outbound_session(jwks.url.rsplit("/", 1)[0]),
    )
    assert ring.find("ed-1") is not None
    assert seen == [unreachable]
