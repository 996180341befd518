"""The signed-token handoff for homegrown portals (docs/token-handoff.md).

A portal posts a compact JWS to ``POST /token/<id>``. Every check below maps
to one reason code, so a portal developer can tell exactly what to fix. The
header is inspected before any cryptography runs: the algorithm comes from
the key the ``kid`` names, never from the token alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
import warnings
from collections.abc import Callable, Collection, Mapping
from typing import Any

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError

from .. import errors
from ..identity import map_identity
from ..settings import KID, TokenConnection
from ..state import Store
from .base import Verified
from .token_keys import TokenKeyring

# RFC 8725 §3.11 explicit typing: a handoff token cannot be confused with an ID token
# or any other JWT the portal signs with the same key. The "application/" prefix may be
# omitted (RFC 7515 §4.1.9), and media types compare case-insensitively.
TOKEN_TYPES = {"handoff+jwt", "application/handoff+jwt"}
# The only header parameters a handoff token may carry. Everything else is refused by
# name: jku/x5u/jwk/x5c would let the token choose its own key (never fetched, never
# trusted), crit/b64/zip/enc change how it is processed, and an unknown one is a mistake
# the portal developer should hear about as such, not as a bad signature.
ALLOWED_HEADERS = frozenset({"alg", "typ", "kid"})
REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "exp", "jti")
SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
MAX_JTI = 256

# The identity field → claim name defaults for this connector (docs/token-handoff.md).
DEFAULT_ATTRIBUTES = {
    "email": "email",
    "given_name": "given_name",
    "family_name": "family_name",
    "display_name": "name",
    "department": "department",
    "location": "location",
    "language": "locale",
    "manager": "manager_id",
    "job_title": "job_title",
    "groups": "groups",
    "employment_status": "employment_status",
    "hire_date": "hire_date",
}


class TokenConnector:
    """Verifies handoff tokens for one connection."""

    def __init__(
        self,
        connection_id: str,
        settings: TokenConnection,
        base_url: str,
        store: Store,
        max_token_bytes: int,
        keyring: TokenKeyring | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection_id = connection_id
        self.settings = settings
        # The audience is this connection's own endpoint: a token minted for connection A
        # is refused by connection B even if both trust the same portal key.
        self.audience = f"{base_url}/token/{connection_id}"
        self._store = store
        self._max_bytes = max_token_bytes
        self._keys = keyring or TokenKeyring(connection_id, settings, store)
        self._clock = clock

    def complete(self, request_data: Mapping[str, str]) -> Verified:
        claims = self.check(request_data.get("token") or "")
        identity = map_identity(
            self.connection_id, self.settings, claims["sub"], claims, DEFAULT_ATTRIBUTES
        )
        next_claim = claims.get("next")
        if next_claim is not None and not isinstance(next_claim, str):
            raise errors.InvalidClaim("next is not a string", claim="next")
        # The jti is used up last, once the token and its attributes passed every check,
        # so a token refused for a fixable reason cannot burn the id of a valid one.
        self._consume_jti(claims)
        return Verified(identity=identity, next=next_claim)

    def verify(self, token: str) -> dict[str, Any]:
        """Check the token and use up its jti: its claims, or a BridgeError naming the flaw."""
        claims = self.check(token)
        self._consume_jti(claims)
        return claims

    def check(self, token: str) -> dict[str, Any]:
        """Every check of the token except replay; nothing is recorded."""
        if len(token) > self._max_bytes:
            raise errors.TokenTooLarge(f"token has {len(token)} bytes, limit {self._max_bytes}")
        header, payload, signature = _split(token)
        alg, kid = _check_header(header, self.settings.algorithms)
        # An unsigned token is refused before its kid can cause any key lookup or fetch.
        if not signature:
            raise errors.BadSignature("the signature is empty")
        key = self._key_for(kid, alg)
        try:
            with warnings.catch_warnings():
                # joserfc warns that RFC 9864 deprecates the name "EdDSA"; it is still the
                # name portals' libraries emit, and the key pins the curve to Ed25519.
                warnings.simplefilter("ignore")
                jws.deserialize_compact(token, key.key, algorithms=[key.alg])
        except BadSignatureError:
            raise errors.BadSignature("the signature does not verify") from None
        except JoseError as exc:
            raise errors.BadSignature(f"verification failed: {type(exc).__name__}") from None
        claims = _claims(payload)
        self._check_claims(claims)
        return claims

    def _key_for(self, kid: str, alg: str) -> Any:
        key = self._keys.find(kid)
        if key is None:
            raise errors.UnknownKey(f"no key with kid {kid!r}")
        if key.alg != alg:
            raise errors.AlgorithmKeyMismatch(
                f"key {kid!r} is pinned to {key.alg}, token says {alg}"
            )
        return key

    def _check_claims(self, claims: dict[str, Any]) -> None:
        for name in REQUIRED_CLAIMS:
            if name not in claims:
                raise errors.MissingClaim(f"claim {name} is missing", claim=name)
        for name in ("iat", "exp", "nbf"):
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise errors.InvalidClaim(f"claim {name} is not a number", claim=name)
        for name in ("iss", "sub", "jti"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise errors.InvalidClaim(f"claim {name} is not a non-empty string", claim=name)
        if len(claims["jti"]) > MAX_JTI:
            raise errors.InvalidClaim("claim jti is too long", claim="jti")
        if claims["iss"] != self.settings.issuer:
            raise errors.IssuerMismatch("iss is not this connection's issuer")
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) == 1:
            aud = aud[0]
        if aud != self.audience:
            raise errors.AudienceMismatch(f"aud must be {self.audience}")
        now = self._clock()
        leeway = self.settings.leeway
        iat, exp = claims["iat"], claims["exp"]
        if exp <= iat:
            raise errors.InvalidClaim("exp is not after iat", claim="exp")
        if exp - iat > self.settings.max_lifetime:
            raise errors.LifetimeExceeded(
                f"exp - iat is {exp - iat:.0f}s, the limit is {self.settings.max_lifetime}s"
            )
        if now > exp + leeway:
            raise errors.ExpiredToken(f"expired {now - exp:.0f}s ago")
        if iat > now + leeway:
            raise errors.TokenNotYetValid(f"iat is {iat - now:.0f}s in the future")
        if "nbf" in claims and claims["nbf"] > now + leeway:
            raise errors.TokenNotYetValid(f"nbf is {claims['nbf'] - now:.0f}s in the future")

    def _consume_jti(self, claims: dict[str, Any]) -> None:
        # Kept until the token could no longer pass the expiry check anyway; hashed so
        # the key length is bounded whatever the portal puts in jti.
        ttl = max(1, int(claims["exp"] + self.settings.leeway - self._clock()) + 1)
        digest = hashlib.sha256(f"{claims['iss']}\0{claims['jti']}".encode()).hexdigest()
        if not self._store.add(f"jti:{self.connection_id}:{digest}", "1", ttl):
            raise errors.ReplayedToken("this jti was already used")


def _check_header(header: dict[str, Any], allowed: Collection[str]) -> tuple[str, str]:
    """The header's alg and kid, after every check that needs no key."""
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise errors.MalformedToken("the header has no alg")
    if alg.lower() == "none":
        raise errors.ForbiddenAlgorithm("alg none is never accepted")
    if alg not in allowed:
        raise errors.ForbiddenAlgorithm(f"alg {alg[:32]!r} is not allowed on this connection")
    forbidden = set(header) - ALLOWED_HEADERS
    if forbidden:
        raise errors.ForbiddenHeader(f"header parameters {sorted(forbidden)} are not accepted")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in TOKEN_TYPES:
        raise errors.InvalidType("typ must be handoff+jwt")
    kid = header.get("kid")
    if kid is None:
        raise errors.MissingKeyId("the header has no kid")
    if not isinstance(kid, str) or not KID.fullmatch(kid):
        raise errors.InvalidKeyId("kid has characters other than letters, digits, . _ -")
    return alg, kid


def _split(token: str) -> tuple[dict[str, Any], bytes, str]:
    parts = token.split(".")
    if len(parts) != 3 or not all(SEGMENT.fullmatch(part) for part in parts):
        raise errors.MalformedToken("not a compact JWS (three base64url segments)")
    header = _json_object(parts[0], "header")
    return header, _b64(parts[1], "payload"), parts[2]


def _claims(payload: bytes) -> dict[str, Any]:
    return _json_object_bytes(payload, "payload")


def _b64(segment: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise errors.MalformedToken(f"the {what} is not base64url") from None


def _json_object(segment: str, what: str) -> dict[str, Any]:
    return _json_object_bytes(_b64(segment, what), what)


def _json_object_bytes(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(
            raw.decode("utf-8"), parse_constant=_no_constants, object_pairs_hook=_unique_keys
        )
    except (UnicodeDecodeError, ValueError):
        raise errors.MalformedToken(f"the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise errors.MalformedToken(f"the {what} is not a JSON object")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 §5.2: a duplicate member name must be rejected, or different parsers in
    # the chain (the portal's, ours, a WAF's) could each read a different "alg" or "sub".
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); Python accepts them by default.
    raise ValueError(name)
