"""An OpenID Provider that the tests control, to drive negative tests against our OIDC client.

`RogueProvider()` serves a real OpenID Provider (and a plain OAuth 2.0 profile API) over HTTP
on a free 127.0.0.1 port, with werkzeug's server in a thread. It behaves correctly until a
test tells it to misbehave, in the ways the OpenID Foundation's relying-party conformance
tests do (issuer mismatch, wrong audience, unsigned ID token, unknown key, ...).

    with RogueProvider() as op:
        op.sig_none()                      # a preset: the next ID tokens are alg=none
        ...drive the client; it must refuse the login...
        assert op.last_authorize.code_challenge_method == "S256"

Endpoints (all under ``op.issuer`` = ``http://127.0.0.1:<port>``):

- ``/.well-known/openid-configuration`` discovery (``discovery_fetches`` counts the GETs);
- ``/authorize`` no UI: redirects at once to ``redirect_uri`` with ``code``, ``state`` and
  ``iss`` (RFC 9207), logged in as ``op.user``;
- ``/token`` authorization_code grant: client authentication as registered
  (client_secret_basic, client_secret_post, private_key_jwt, none), single-use codes,
  ``redirect_uri`` and PKCE checks; an ``id_token`` only when the scope has ``openid``;
- ``/userinfo`` and ``/profile`` (the plain OAuth 2.0 API): bearer-token protected JSON;
- ``/jwks`` the published public keys (``jwks_fetches`` counts the GETs);
- ``/logout`` RP-initiated logout: redirects to ``post_logout_redirect_uri`` with ``state``.

Every request is recorded (``authorize_requests``, ``token_requests``, ...). The behaviour
switches are plain attributes; ``reset()`` puts them all back. Nothing here is a mock.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import hmac
import json
import secrets
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

import pytest
import requests
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey
from joserfc.jws import JWSRegistry
from werkzeug.wrappers import Request, Response

from tests.services import HOST, Closing, ServiceError, WsgiThread

CLIENT_ID = "sso-bridge"
CLIENT_SECRET = "rogue-client-secret-0123456789abcdef0123"  # tests only
DEFAULT_REDIRECT_URI = "http://127.0.0.1:5000/auth/oidc/callback"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
# What /token accepts in a private_key_jwt client assertion (never none nor HMAC).
ASSERTION_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
HTTP_TIMEOUT = 10.0

# `sign_with` values -> the JWS alg each one signs with.
SIGNING_MODES: dict[str, str] = {
    "rs256": "RS256",  # the current RSA key (published)
    "es256": "ES256",  # the EC P-256 key (published)
    "hs256-client-secret": "HS256",  # HMAC keyed with the client's secret
    "none": "none",  # unsigned: empty signature
    "bad-signature": "RS256",  # the current RSA key, then one signature bit flipped
    "bad-signature-es256": "ES256",  # the EC key, then one signature bit flipped
    "other-key": "RS256",  # an RSA key that is never published (its own kid)
}
CLAIMS_SUPPORTED = (
    *("iss", "sub", "aud", "exp", "iat", "auth_time", "nonce"),
    *("email", "email_verified", "given_name", "family_name", "name", "locale"),
    *("department", "groups"),
)
_MODE_FOR_ALG = {"RS256": "rs256", "ES256": "es256", "HS256": "hs256-client-secret", "none": "none"}

# username -> OIDC claims. `sub` is the employee number (as the SAML test IdP's uid).
USERS: dict[str, dict[str, Any]] = {
    "ada": {
        "sub": "E1001",
        "email": "ada@acme.example",
        "email_verified": True,
        "given_name": "Ada",
        "family_name": "Lovelace",
        "name": "Ada Lovelace",
        "locale": "en-GB",
        "department": "Engineering",
        "groups": ["engineering", "staff"],
    },
    "zoe": {
        "sub": "E1002",
        "email": "zoe@acme.example",
        "email_verified": True,
        "given_name": "Zoë",
        "family_name": "Ørsted-Ünal",
        "name": "Zoë Ørsted-Ünal 佐藤",
        "locale": "da-DK",
        "department": "Forschung & Entwicklung",
        "groups": ["research", "staff"],
    },
    "nomail": {
        "sub": "E1003",
        "given_name": "Noah",
        "family_name": "Mailless",
        "name": "Noah Mailless",
        "locale": "en-GB",
        "department": "Warehouse",
        "groups": ["staff"],
    },
}

# Preset name -> RogueProvider method. The "rp-..." names are the OpenID Foundation's RP test
# ids the preset reproduces; the others are ours (no conformance test of that name).
PRESETS: dict[str, str] = {
    "rp-id_token-issuer-mismatch": "issuer_mismatch",
    "rp-id_token-aud": "aud_mismatch",
    "rp-id_token-sub": "sub_missing",
    "rp-id_token-iat": "iat_missing",
    "rp-id_token-kid-absent-single-jwks": "kid_absent_single_jwks",
    "rp-id_token-kid-absent-multiple-jwks": "kid_absent_multiple_jwks",
    "rp-id_token-sig-none": "sig_none",
    "rp-id_token-bad-sig-rs256": "bad_sig_rs256",
    "rp-id_token-bad-sig-es256": "bad_sig_es256",
    "rp-id_token-sig-hs256": "sig_hs256_client_secret",
    "rp-nonce-invalid": "nonce_invalid",
    "id_token-exp-past": "exp_expired",
    "rp-key-rotation-op-sign-key": "rotate",
    "rp-discovery-issuer-not-matching-config": "discovery_issuer_mismatch",
    "rp-userinfo-bad-sub-claim": "userinfo_bad_sub",
    "unknown-kid": "unknown_kid",
    "authorization-response-iss-mix-up": "mix_up",
    "authorization-response-iss-missing": "iss_missing",
}

ClaimsOverride = Callable[[dict[str, Any]], dict[str, Any]] | Mapping[str, Any]


class RogueProviderError(ServiceError):
    """The rogue provider could not start, or failed inside a request (a bug in a test)."""


# --- records -------------------------------------------------------------------------


@dataclass
class Client:
    """A registered client. `redirect_uris=None` accepts any redirect_uri at /authorize."""

    client_id: str
    client_secret: str | None = None
    auth_method: str = "client_secret_basic"
    redirect_uris: list[str] | None = None
    jwks: dict[str, Any] | None = None  # public keys, for private_key_jwt


@dataclass
class AuthorizeRequest:
    """One call to /authorize, as received, and what the provider answered."""

    params: dict[str, str]
    client_id: str | None
    redirect_uri: str | None
    response_type: str | None
    scope: str | None
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    user: str
    code: str | None = None
    error: str | None = None
    location: str | None = None  # where the provider redirected (None: error page)

    @property
    def scopes(self) -> list[str]:
        return (self.scope or "").split()


@dataclass
class TokenRequest:
    """One call to /token: the form, how the client authenticated, and the answer."""

    form: dict[str, str]
    authorization: str | None = None  # the Authorization header, verbatim
    client_auth: str | None = None  # the method the client used (one of AUTH_METHODS)
    client_id: str | None = None
    assertion_header: dict[str, Any] | None = None  # private_key_jwt, unverified
    assertion_claims: dict[str, Any] | None = None
    assertion_verified: bool = False
    authorize: AuthorizeRequest | None = None  # the request the code was issued for
    status: int = 0
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return self.response.get("error") if self.status != 200 else None

    @property
    def code_verifier(self) -> str | None:
        return self.form.get("code_verifier")


@dataclass
class ResourceRequest:
    """One call to /userinfo or /profile."""

    path: str
    authorization: str | None
    token: str | None
    status: int = 0
    response: dict[str, Any] = field(default_factory=dict)


@dataclass
class Grant:
    """An access token the provider issued."""

    access_token: str
    client_id: str
    user: str
    scope: str
    authorize: AuthorizeRequest
    id_token: str | None = None


# --- helpers -------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def s256(verifier: str) -> str:
    """The PKCE S256 code challenge of `verifier`."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """(header, claims, signature) of a compact JWS, without checking anything."""
    header, payload, signature = token.split(".")
    return (
        json.loads(b64url_decode(header)),
        json.loads(b64url_decode(payload)),
        b64url_decode(signature),
    )


def _merge(base: dict[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """`base` updated with `override`; a None value in `override` deletes the key."""
    result = dict(base)
    for key, value in (override or {}).items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def _apply(base: dict[str, Any], override: ClaimsOverride | None) -> dict[str, Any]:
    if override is None:
        return base
    if callable(override):
        return dict(override(copy.deepcopy(base)))
    return _merge(base, override)


def _with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _redirect(location: str) -> Response:
    return Response("", status=302, headers={"Location": location})


class _OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


# --- the provider ----------------------------------------------------------------------


class RogueProvider(Closing):
    """A test-controlled OpenID Provider on a free 127.0.0.1 port (started by the constructor).

    The constructor registers one client (`client_id`, `client_secret`, `auth_method`,
    `redirect_uris`, `client_jwks`); `register_client()` adds more. Use it as a context
    manager, or call `stop()`.
    """

    def __init__(
        self,
        client_id: str = CLIENT_ID,
        client_secret: str | None = CLIENT_SECRET,
        *,
        auth_method: str = "client_secret_basic",
        redirect_uris: list[str] | None = None,
        client_jwks: Any = None,
        user: str = "ada",
    ) -> None:
        self._lock = threading.RLock()
        self.clients: dict[str, Client] = {}
        self.client_id = client_id
        self.client_secret = client_secret
        self.register_client(
            client_id,
            client_secret=client_secret,
            auth_method=auth_method,
            redirect_uris=redirect_uris,
            jwks=client_jwks,
        )
        self._rsa_serial = 0
        self.rsa_key = self._new_rsa_key()
        self.ec_key = ECKey.generate_key("P-256", parameters={"kid": self._kid("ec")})
        self.retired_keys: list[RSAKey] = []  # rotated out, still published (keep_old=True)
        self.reset()
        self.clear_records()
        self._http: WsgiThread | None = None
        self.port = 0
        self._start()

    # --- configuration -----------------------------------------------------------------

    def reset(self) -> RogueProvider:
        """Every behaviour switch back to a correct provider (keys, clients, records kept)."""
        self.user = "ada"
        # /authorize
        self.authorize_iss: str | None = None  # the `iss` sent back; None: the issuer
        self.omit_iss = False
        self.drop_state = False
        self.state_override: str | None = None
        self.authorize_error: str | None = None  # e.g. "access_denied": redirect with error
        self.require_pkce = False  # True: no code_challenge -> error=invalid_request
        # ID token
        self.id_token_claims: ClaimsOverride | None = None
        self.id_token_header: Mapping[str, Any] | None = None
        self.sign_with: str | None = None  # None: follow the header's alg (default RS256)
        self.omit_kid = False
        self.id_token_lifetime = 300
        # /token
        self.expires_in = 300
        self.token_response: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        # /userinfo, /profile
        self.userinfo_claims: ClaimsOverride | None = None
        self.profile_claims: ClaimsOverride | None = None
        # discovery, /jwks
        self.discovery_issuer: str | None = None
        self.discovery_overrides: Mapping[str, Any] | None = None
        self.jwks_override: Mapping[str, Any] | None = None
        self.publish: set[str] = {"rs256", "es256"}
        return self

    def clear_records(self) -> None:
        """Forget every recorded request and reset the counters."""
        with self._lock:
            self.authorize_requests: list[AuthorizeRequest] = []
            self.token_requests: list[TokenRequest] = []
            self.userinfo_requests: list[ResourceRequest] = []
            self.profile_requests: list[ResourceRequest] = []
            self.logout_requests: list[dict[str, str]] = []
            self.codes: dict[str, AuthorizeRequest] = {}
            self.grants: dict[str, Grant] = {}
            self.used_jtis: set[str] = set()
            self.errors: list[str] = []
            self.hits: Counter[str] = Counter()

    def reset_counters(self) -> None:
        with self._lock:
            self.hits.clear()

    def register_client(
        self,
        client_id: str,
        *,
        client_secret: str | None = None,
        auth_method: str = "client_secret_basic",
        redirect_uris: list[str] | None = None,
        jwks: Any = None,
    ) -> Client:
        """Register (or replace) a client. `jwks`: a JWKS dict, a joserfc key or KeySet."""
        if auth_method not in AUTH_METHODS:
            raise ValueError(f"auth_method must be one of {AUTH_METHODS}, not {auth_method!r}")
        if auth_method.startswith("client_secret") and not client_secret:
            raise ValueError(f"{auth_method} needs a client_secret")
        if auth_method == "private_key_jwt" and jwks is None:
            raise ValueError("private_key_jwt needs the client's public keys (jwks)")
        client = Client(client_id, client_secret, auth_method, redirect_uris, _public_jwks(jwks))
        with self._lock:
            self.clients[client_id] = client
        return client

    @property
    def client(self) -> Client:
        """The client the constructor registered."""
        return self.clients[self.client_id]

    # --- presets (each returns self) ------------------------------------------------------

    def apply(self, name: str) -> RogueProvider:
        """Apply a preset by its OpenID Foundation test id (see PRESETS) or method name."""
        method = PRESETS.get(name, name)
        if method not in PRESETS.values():
            raise KeyError(f"no preset {name!r}; known: {sorted(PRESETS)}")
        getattr(self, method)()
        return self

    def issuer_mismatch(self, iss: str = "https://op.example.org") -> RogueProvider:
        """ID token `iss` is not the issuer."""
        self.id_token_claims = {"iss": iss}
        return self

    def aud_mismatch(self, aud: str = "someone-else") -> RogueProvider:
        """ID token `aud` is another client only."""
        self.id_token_claims = {"aud": [aud]}
        return self

    def sub_missing(self) -> RogueProvider:
        self.id_token_claims = {"sub": None}
        return self

    def iat_missing(self) -> RogueProvider:
        self.id_token_claims = {"iat": None}
        return self

    def exp_expired(self, ago: int = 600) -> RogueProvider:
        """`exp` is `ago` seconds in the past (`iat` and `auth_time` 300 s before it)."""

        def expired(claims: dict[str, Any]) -> dict[str, Any]:
            now = int(time.time())
            return {
                **claims,
                "exp": now - ago,
                "iat": now - ago - 300,
                "auth_time": now - ago - 300,
            }

        self.id_token_claims = expired
        return self

    def nonce_invalid(self) -> RogueProvider:
        """ID token `nonce` differs from the one the client sent."""
        self.id_token_claims = {"nonce": "not-your-nonce-" + secrets.token_urlsafe(8)}
        return self

    def kid_absent_single_jwks(self) -> RogueProvider:
        """No `kid`, one key published (the signing key): a client should accept."""
        self.omit_kid = True
        self.sign_with = "rs256"
        self.publish = {"rs256"}
        return self

    def kid_absent_multiple_jwks(self) -> RogueProvider:
        """No `kid`, three keys published (two RSA, one EC): a client should refuse."""
        self.omit_kid = True
        self.sign_with = "rs256"
        self.publish = {"rs256", "rs256-spare", "es256"}
        return self

    def sig_none(self) -> RogueProvider:
        """Header alg=none, no kid, empty signature."""
        self.sign_with = "none"
        return self

    def bad_sig_rs256(self) -> RogueProvider:
        """RS256 with the published key's kid, one bit of the signature flipped."""
        self.sign_with = "bad-signature"
        return self

    def bad_sig_es256(self) -> RogueProvider:
        self.sign_with = "bad-signature-es256"
        return self

    def sig_hs256_client_secret(self) -> RogueProvider:
        """HS256 keyed with the client secret (valid per OIDC Core 10.1 if registered)."""
        self.sign_with = "hs256-client-secret"
        return self

    def unknown_kid(self) -> RogueProvider:
        """RS256 with a key the JWKS never publishes (its kid unknown even after a refetch)."""
        self.sign_with = "other-key"
        return self

    def rotate(self, *, keep_old: bool = False) -> RogueProvider:
        """A new RSA signing key with a new kid; the JWKS drops the old one unless keep_old."""
        with self._lock:
            old = self.rsa_key
            self.rsa_key = self._new_rsa_key()
            if keep_old:
                self.retired_keys.append(old)
        return self

    def discovery_issuer_mismatch(self, issuer: str = "https://op.example.org") -> RogueProvider:
        """Discovery `issuer` differs from the URL it was fetched from."""
        self.discovery_issuer = issuer
        return self

    def userinfo_bad_sub(self, sub: str = "E9999") -> RogueProvider:
        """/userinfo answers for another `sub` than the ID token's."""
        self.userinfo_claims = {"sub": sub}
        return self

    def mix_up(self, iss: str = "http://other") -> RogueProvider:
        """The authorization response carries another provider's `iss` (RFC 9207)."""
        self.authorize_iss = iss
        return self

    def iss_missing(self) -> RogueProvider:
        """The authorization response has no `iss` (discovery still advertises it)."""
        self.omit_iss = True
        return self

    # --- keys and tokens --------------------------------------------------------------

    def _kid(self, name: str) -> str:
        return f"{name}-{secrets.token_hex(4)}"

    def _new_rsa_key(self) -> RSAKey:
        self._rsa_serial += 1
        kid = self._kid(f"rsa{self._rsa_serial}")
        return RSAKey.generate_key(2048, parameters={"kid": kid})

    @functools.cached_property
    def spare_rsa_key(self) -> RSAKey:
        """A second RSA key, published only by kid_absent_multiple_jwks ("rs256-spare")."""
        return RSAKey.generate_key(2048, parameters={"kid": self._kid("rsa-spare")})

    @functools.cached_property
    def other_key(self) -> RSAKey:
        """An RSA key never published unless `publish` has "other" (sign_with="other-key")."""
        return RSAKey.generate_key(2048, parameters={"kid": self._kid("other")})

    def published_keys(self) -> list[RSAKey | ECKey]:
        """The keys /jwks publishes now (private halves; `jwks()` strips them)."""
        with self._lock:
            keys: list[RSAKey | ECKey] = []
            if "rs256" in self.publish:
                keys.append(self.rsa_key)
            keys.extend(self.retired_keys)
            if "rs256-spare" in self.publish:
                keys.append(self.spare_rsa_key)
            if "es256" in self.publish:
                keys.append(self.ec_key)
            if "other" in self.publish:
                keys.append(self.other_key)
            return keys

    def jwks(self) -> dict[str, Any]:
        """The JWKS /jwks serves (public keys, each with kid, use=sig and alg)."""
        if self.jwks_override is not None:
            return dict(self.jwks_override)
        keys = []
        for key in self.published_keys():
            data = key.as_dict(private=False)
            data.update(use="sig", alg="ES256" if isinstance(key, ECKey) else "RS256")
            keys.append(data)
        return {"keys": keys}

    def id_token_claims_for(
        self, authorize: AuthorizeRequest, client_id: str | None = None
    ) -> dict[str, Any]:
        """The correct ID token claims for a login (before the `id_token_claims` hook)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": USERS[authorize.user]["sub"],
            "aud": [client_id or authorize.client_id or self.client_id],
            "exp": now + self.id_token_lifetime,
            "iat": now,
            "auth_time": now,
        }
        if authorize.nonce is not None:
            claims["nonce"] = authorize.nonce
        claims.update({k: v for k, v in USERS[authorize.user].items() if k != "sub"})
        return claims

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        sign_with: str | None = None,
        header: Mapping[str, Any] | None = None,
        omit_kid: bool | None = None,
        client_id: str | None = None,
    ) -> str:
        """A compact JWS of `claims`, made as the ID token is (arguments default to the
        provider's `sign_with`, `id_token_header` and `omit_kid`).

        The signing key and algorithm come from `sign_with` (see SIGNING_MODES); when that
        is None, from the header's `alg` (RS256 unless `header` says ES256, HS256 or none).
        The header is {"alg", "typ": "JWT", "kid"} updated with `header` (a None value
        deletes a parameter), so a header may lie about the algorithm actually used.
        """
        header = self.id_token_header if header is None else header
        mode = self.sign_with if sign_with is None else sign_with
        omit_kid = self.omit_kid if omit_kid is None else omit_kid
        if mode is None:
            alg = (header or {}).get("alg") or "RS256"
            if alg not in _MODE_FOR_ALG:
                raise ValueError(f"set sign_with for header alg {alg!r}")
            mode = _MODE_FOR_ALG[alg]
        if mode not in SIGNING_MODES:
            raise ValueError(f"sign_with must be one of {sorted(SIGNING_MODES)}, not {mode!r}")
        alg = SIGNING_MODES[mode]
        key: RSAKey | ECKey | OctKey | None
        if mode in ("rs256", "bad-signature"):
            key = self.rsa_key
        elif mode in ("es256", "bad-signature-es256"):
            key = self.ec_key
        elif mode == "other-key":
            key = self.other_key
        elif mode == "hs256-client-secret":
            secret = self.clients[client_id or self.client_id].client_secret
            if not secret:
                raise ValueError("hs256-client-secret needs a client with a secret")
            key = OctKey.import_key(secret.encode())
        else:
            key = None
        protected: dict[str, Any] = {"alg": alg, "typ": "JWT"}
        if key is not None and key.kid and not omit_kid:
            protected["kid"] = key.kid
        protected = _merge(protected, header)
        signing_input = (
            b64url(json.dumps(protected, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
        )
        if key is None:
            signature = b""
        else:
            signature = JWSRegistry.algorithms[alg].sign(signing_input.encode("ascii"), key)  # type: ignore[arg-type]
        if mode.startswith("bad-signature"):
            flipped = bytearray(signature)
            flipped[len(flipped) // 2] ^= 0x01
            signature = bytes(flipped)
        return signing_input + "." + b64url(signature)

    def mint_id_token(self, authorize: AuthorizeRequest, client_id: str | None = None) -> str:
        """The ID token /token would return for `authorize`, with every override applied."""
        claims = _apply(self.id_token_claims_for(authorize, client_id), self.id_token_claims)
        return self.sign(claims, client_id=client_id or authorize.client_id)

    def verification_keys(self) -> KeySet:
        """A KeySet of every key this provider ever signs with (published or not)."""
        keys: list[RSAKey | ECKey] = [self.rsa_key, self.ec_key, self.spare_rsa_key]
        keys += [self.other_key, *self.retired_keys]
        jwks: Any = {"keys": [key.as_dict(private=False) for key in keys]}
        return KeySet.import_key_set(jwks)

    # --- URLs ---------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url(self, path: str) -> str:
        return self.issuer + path

    @property
    def discovery_url(self) -> str:
        return self.url("/.well-known/openid-configuration")

    @property
    def authorization_endpoint(self) -> str:
        return self.url("/authorize")

    @property
    def token_endpoint(self) -> str:
        return self.url("/token")

    @property
    def userinfo_endpoint(self) -> str:
        return self.url("/userinfo")

    @property
    def profile_endpoint(self) -> str:
        return self.url("/profile")

    @property
    def jwks_uri(self) -> str:
        return self.url("/jwks")

    @property
    def end_session_endpoint(self) -> str:
        return self.url("/logout")

    # --- counters and records ---------------------------------------------------------

    @property
    def jwks_fetches(self) -> int:
        return self.hits["/jwks"]

    @property
    def discovery_fetches(self) -> int:
        return self.hits["/.well-known/openid-configuration"]

    @property
    def last_authorize(self) -> AuthorizeRequest:
        if not self.authorize_requests:
            raise AssertionError("nothing called /authorize")
        return self.authorize_requests[-1]

    @property
    def last_token(self) -> TokenRequest:
        if not self.token_requests:
            raise AssertionError("nothing called /token")
        return self.token_requests[-1]

    def login(self, authorize_url: str, http: requests.Session | None = None) -> str:
        """GET an authorization URL (as the browser would) and return where the provider
        redirects: the client's callback URL with code, state and iss."""
        session = http or requests.Session()
        session.trust_env = False
        try:
            response = session.get(authorize_url, allow_redirects=False, timeout=HTTP_TIMEOUT)
        finally:
            if http is None:
                session.close()
        if response.status_code != 302:
            raise AssertionError(
                f"/authorize answered {response.status_code}, not a redirect: {response.text}"
            )
        return response.headers["Location"]

    # --- the server -----------------------------------------------------------------------

    def _start(self) -> None:
        self._http = WsgiThread(self._wsgi, "rogue-op")
        self.port = self._http.port

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()

    def check(self) -> None:
        """Fail if a request hit a bug in the provider (e.g. a bad override)."""
        if self.errors:
            raise RogueProviderError("the rogue provider failed:\n" + "\n".join(self.errors))

    # --- WSGI ---------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        routes: dict[str, Callable[[Request], Response]] = {
            "/.well-known/openid-configuration": self._discovery,
            "/authorize": self._authorize,
            "/token": self._token,
            "/userinfo": self._userinfo,
            "/profile": self._profile,
            "/jwks": self._jwks,
            "/logout": self._logout,
        }
        with self._lock:
            self.hits[request.path] += 1
        handler = routes.get(request.path)
        try:
            response = handler(request) if handler else _json({"error": "not_found"}, 404)
        except Exception:
            with self._lock:
                self.errors.append(f"{request.method} {request.path}\n{traceback.format_exc()}")
            response = Response(traceback.format_exc(), status=500, mimetype="text/plain")
        return response(environ, start_response)

    def _discovery(self, request: Request) -> Response:
        document = {
            "issuer": self.discovery_issuer or self.issuer,
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": self.token_endpoint,
            "userinfo_endpoint": self.userinfo_endpoint,
            "jwks_uri": self.jwks_uri,
            "end_session_endpoint": self.end_session_endpoint,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "token_endpoint_auth_methods_supported": list(AUTH_METHODS[:3]),
            "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "email"],
            "claims_supported": sorted(CLAIMS_SUPPORTED),
            "authorization_response_iss_parameter_supported": True,
        }
        return _json(_merge(document, self.discovery_overrides))

    def _jwks(self, request: Request) -> Response:
        response = _json(self.jwks())
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    def _authorize(self, request: Request) -> Response:
        params = dict((request.form if request.method == "POST" else request.args).items())
        login_hint = params.get("login_hint")
        record = AuthorizeRequest(
            params=params,
            client_id=params.get("client_id"),
            redirect_uri=params.get("redirect_uri"),
            response_type=params.get("response_type"),
            scope=params.get("scope"),
            state=params.get("state"),
            nonce=params.get("nonce"),
            code_challenge=params.get("code_challenge"),
            code_challenge_method=params.get("code_challenge_method"),
            user=login_hint if login_hint in USERS else self.user,
        )
        with self._lock:
            self.authorize_requests.append(record)
        client = self.clients.get(record.client_id or "")
        if client is None:
            record.error = "invalid_client"
            return Response(f"unknown client_id {record.client_id!r}", status=400)
        if not record.redirect_uri or (
            client.redirect_uris is not None and record.redirect_uri not in client.redirect_uris
        ):
            record.error = "invalid_redirect_uri"
            return Response(f"redirect_uri {record.redirect_uri!r} not registered", status=400)

        answer: dict[str, str] = {}
        if self.authorize_error:
            record.error = answer["error"] = self.authorize_error
        elif record.response_type != "code":
            record.error = answer["error"] = "unsupported_response_type"
        elif self.require_pkce and not record.code_challenge:
            record.error = answer["error"] = "invalid_request"
            answer["error_description"] = "code_challenge required"
        else:
            record.code = answer["code"] = secrets.token_urlsafe(24)
            with self._lock:
                self.codes[record.code] = record
        if self.state_override is not None:
            answer["state"] = self.state_override
        elif record.state is not None and not self.drop_state:
            answer["state"] = record.state
        if not self.omit_iss:
            answer["iss"] = self.authorize_iss or self.issuer
        record.location = _with_query(record.redirect_uri, answer)
        return _redirect(record.location)

    def _token(self, request: Request) -> Response:
        record = TokenRequest(
            form=dict(request.form.items()), authorization=request.headers.get("Authorization")
        )
        with self._lock:
            self.token_requests.append(record)
        headers: dict[str, str] = {}
        try:
            if request.method != "POST":
                raise _OAuthError("invalid_request", "POST only", 405)
            try:
                client = self._authenticate_client(request, record)
            except _OAuthError:
                if record.client_auth == "client_secret_basic":
                    headers["WWW-Authenticate"] = 'Basic realm="rogue-op"'
                raise
            body = self._grant(record, client)
            record.status = 200
        except _OAuthError as exc:
            record.status = exc.status
            body = {"error": exc.error, "error_description": exc.description}
        record.response = body
        return _json(body, record.status, headers)

    def _authenticate_client(self, request: Request, record: TokenRequest) -> Client:
        form = request.form
        secret: list[str] = []
        auth = request.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            record.client_auth = "client_secret_basic"
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError as exc:
                raise _OAuthError("invalid_client", "malformed Basic credentials", 401) from exc
            record.client_id = unquote_plus(user)
            secret = [password, unquote_plus(password)]
        elif "client_assertion" in form or "client_assertion_type" in form:
            record.client_auth = "private_key_jwt"
            assertion = form.get("client_assertion", "")
            try:
                extracted = jws.extract_compact(assertion.encode())
                record.assertion_header = dict(extracted.headers())
                record.assertion_claims = json.loads(extracted.payload)
            except (JoseError, ValueError) as exc:
                raise _OAuthError(
                    "invalid_client", f"malformed client_assertion: {exc}", 401
                ) from exc
            claimed = (record.assertion_claims or {}).get("sub")
            record.client_id = form.get("client_id") or (
                claimed if isinstance(claimed, str) else None
            )
        elif "client_secret" in form:
            record.client_auth = "client_secret_post"
            record.client_id = form.get("client_id")
            secret = [form["client_secret"]]
        else:
            record.client_auth = "none"
            record.client_id = form.get("client_id")

        client = self.clients.get(record.client_id or "")
        if client is None:
            raise _OAuthError("invalid_client", f"unknown client {record.client_id!r}", 401)
        if form.get("client_id") not in (None, client.client_id):
            raise _OAuthError("invalid_client", "client_id differs from the credentials", 401)
        if record.client_auth != client.auth_method:
            raise _OAuthError(
                "invalid_client",
                f"{client.client_id} must authenticate with {client.auth_method}, "
                f"not {record.client_auth}",
                401,
            )
        if client.auth_method.startswith("client_secret"):
            expected = (client.client_secret or "").encode()
            if not any(hmac.compare_digest(expected, s.encode()) for s in secret):
                raise _OAuthError("invalid_client", "wrong client secret", 401)
        elif client.auth_method == "private_key_jwt":
            self._verify_assertion(form, client, record)
        return client

    def _verify_assertion(
        self, form: Mapping[str, str], client: Client, record: TokenRequest
    ) -> None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise _OAuthError("invalid_client", "client_assertion_type is not jwt-bearer", 401)
        try:
            token = jwt.decode(
                form.get("client_assertion", ""),
                KeySet.import_key_set(cast(Any, client.jwks or {"keys": []})),
                algorithms=list(ASSERTION_ALGORITHMS),
            )
            jwt.JWTClaimsRegistry(
                leeway=30,
                iss={"essential": True, "value": client.client_id},
                sub={"essential": True, "value": client.client_id},
                exp={"essential": True},
                jti={"essential": True},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise _OAuthError("invalid_client", f"client_assertion refused: {exc!r}", 401) from exc
        audience = token.claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if not ({self.token_endpoint, self.issuer} & set(audiences)):
            raise _OAuthError("invalid_client", f"client_assertion aud {audience!r}", 401)
        with self._lock:
            if token.claims["jti"] in self.used_jtis:
                raise _OAuthError("invalid_client", "client_assertion jti replayed", 401)
            self.used_jtis.add(token.claims["jti"])
        record.assertion_verified = True

    def _grant(self, record: TokenRequest, client: Client) -> dict[str, Any]:
        form = record.form
        if form.get("grant_type") != "authorization_code":
            raise _OAuthError("unsupported_grant_type", f"grant_type {form.get('grant_type')!r}")
        with self._lock:
            authorize = self.codes.pop(form.get("code", ""), None)  # single use
        if authorize is None:
            raise _OAuthError("invalid_grant", "unknown, expired or already used code")
        record.authorize = authorize
        if authorize.client_id != client.client_id:
            raise _OAuthError("invalid_grant", "the code was issued to another client")
        if form.get("redirect_uri") != authorize.redirect_uri:
            raise _OAuthError(
                "invalid_grant", "redirect_uri differs from the authorization request"
            )
        verifier = form.get("code_verifier")
        if authorize.code_challenge is not None:
            method = authorize.code_challenge_method or "plain"
            if not verifier:
                raise _OAuthError("invalid_grant", "code_verifier missing")
            if method == "S256":
                computed = s256(verifier)
            elif method == "plain":
                computed = verifier
            else:
                raise _OAuthError("invalid_grant", f"code_challenge_method {method!r}")
            if not hmac.compare_digest(computed.encode(), authorize.code_challenge.encode()):
                raise _OAuthError("invalid_grant", "PKCE verification failed")
        elif verifier:
            raise _OAuthError("invalid_grant", "code_verifier sent but no code_challenge was")

        grant = Grant(
            access_token=secrets.token_urlsafe(32),
            client_id=client.client_id,
            user=authorize.user,
            scope=authorize.scope or "",
            authorize=authorize,
        )
        body: dict[str, Any] = {
            "access_token": grant.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        if grant.scope:
            body["scope"] = grant.scope
        if "openid" in grant.scope.split():
            grant.id_token = body["id_token"] = self.mint_id_token(authorize, client.client_id)
        with self._lock:
            self.grants[grant.access_token] = grant
        if self.token_response is not None:
            body = dict(self.token_response(dict(body)))
        return body

    def _bearer(self, request: Request, record: ResourceRequest) -> Grant:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            record.token = auth[7:].strip()
        grant = self.grants.get(record.token or "")
        if grant is None:
            raise _OAuthError("invalid_token", "missing, unknown or expired access token", 401)
        return grant

    def _resource(
        self,
        request: Request,
        records: list[ResourceRequest],
        body_for: Callable[[Grant], dict[str, Any]],
    ) -> Response:
        record = ResourceRequest(request.path, request.headers.get("Authorization"), None)
        with self._lock:
            records.append(record)
        try:
            body = body_for(self._bearer(request, record))
            record.status = 200
            headers: dict[str, str] = {}
        except _OAuthError as exc:
            record.status = exc.status
            body = {"error": exc.error, "error_description": exc.description}
            headers = {"WWW-Authenticate": f'Bearer error="{exc.error}"'}
        record.response = body
        return _json(body, record.status, headers)

    def userinfo_claims_for(self, user: str) -> dict[str, Any]:
        """The correct /userinfo answer for `user` (before the `userinfo_claims` hook)."""
        return dict(USERS[user])

    def profile_for(self, user: str) -> dict[str, Any]:
        """The plain OAuth 2.0 profile for `user` (before the `profile_claims` hook)."""
        claims = USERS[user]
        profile = {
            "id": claims["sub"],
            "mail": claims.get("email"),
            "dept": claims.get("department"),
            "name": claims.get("name"),
            "firstName": claims.get("given_name"),
            "lastName": claims.get("family_name"),
        }
        return {k: v for k, v in profile.items() if v is not None}

    def _userinfo(self, request: Request) -> Response:
        def body(grant: Grant) -> dict[str, Any]:
            if "openid" not in grant.scope.split():
                raise _OAuthError("insufficient_scope", "the token has no openid scope", 403)
            return _apply(self.userinfo_claims_for(grant.user), self.userinfo_claims)

        return self._resource(request, self.userinfo_requests, body)

    def _profile(self, request: Request) -> Response:
        return self._resource(
            request,
            self.profile_requests,
            lambda grant: _apply(self.profile_for(grant.user), self.profile_claims),
        )

    def _logout(self, request: Request) -> Response:
        params = dict((request.form if request.method == "POST" else request.args).items())
        with self._lock:
            self.logout_requests.append(params)
        target = params.get("post_logout_redirect_uri")
        if target:
            extra = {"state": params["state"]} if "state" in params else {}
            return _redirect(_with_query(target, extra))
        return Response("signed out", mimetype="text/plain")


def _public_jwks(jwks: Any) -> dict[str, Any] | None:
    """A public JWKS dict from a JWKS dict, a joserfc key or a joserfc KeySet."""
    if jwks is None:
        return None
    if isinstance(jwks, Mapping):
        return {"keys": [dict(k) for k in jwks["keys"]]}
    if isinstance(jwks, KeySet):
        return dict(jwks.as_dict(private=False))
    return {"keys": [jwks.as_dict(private=False)]}


@pytest.fixture
def rogue_provider() -> Iterator[RogueProvider]:
    """A fresh RogueProvider per test (import this fixture into a test module)."""
    with RogueProvider() as provider:
        yield provider
        provider.check()


__all__ = [
    "CLIENT_ID",
    "CLIENT_SECRET",
    "DEFAULT_REDIRECT_URI",
    "PRESETS",
    "SIGNING_MODES",
    "USERS",
    "AuthorizeRequest",
    "Client",
    "Grant",
    "ResourceRequest",
    "RogueProvider",
    "RogueProviderError",
    "TokenRequest",
    "b64url",
    "decode_unverified",
    "rogue_provider",
    "s256",
]
