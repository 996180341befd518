"""JSON Web Key Sets: pin each key to one algorithm, and fetch and cache remote sets.

Every key is pinned to exactly one algorithm. A key from a JWKS takes its
algorithm from the JWK's ``alg``, or from its type and curve when that is
unambiguous (OKP Ed25519 → EdDSA, EC P-256 → ES256, RSA → RS256), never from
the token being verified. Used for portals' handoff-token keys and for OpenID
providers' ID-token keys.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey, import_key

from .errors import BridgeError, KeySetUnavailable
from .fetch import FetchError, fetch_bounded
from .logs import get_logger
from .settings import KID
from .state import Store

log = get_logger("sso_bridge.jwks")

MIN_RSA_BITS = 2048
MAX_JWKS_BYTES = 64 * 1024
FETCH_SECONDS = 5
FETCH_POLL_SECONDS = 0.02
# The value of the fetch gate while a fetch runs, and after it ended.
FETCHING, FETCHED = "fetching", "fetched"
PUBLIC_PARAMS = ("kty", "crv", "x", "y", "n", "e")
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}


@dataclass(frozen=True)
class PinnedKey:
    kid: str
    alg: str
    key: Key


class KeyConfigError(ValueError):
    """A configured key is unusable; the message names it."""


def wrap_key(kid: str, alg: str, public: Any) -> Key:
    """Wrap a public key for joserfc after checking that its type matches ``alg``."""
    if alg == "EdDSA" and isinstance(public, ed25519.Ed25519PublicKey):
        return OKPKey.import_key(public)
    if (
        alg in EC_ALGORITHMS
        and isinstance(public, ec.EllipticCurvePublicKey)
        and isinstance(public.curve, EC_ALGORITHMS[alg])
    ):
        return ECKey.import_key(public)
    if alg in RSA_ALGORITHMS and isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise KeyConfigError(f"key {kid!r}: RSA keys need at least {MIN_RSA_BITS} bits")
        return RSAKey.import_key(public)
    raise KeyConfigError(f"key {kid!r}: the key type does not fit {alg}")


def parse_jwks(data: Any, allowed: list[str]) -> dict[str, PinnedKey]:
    """Pinned keys from a JWKS document; keys that cannot be pinned are left out and logged."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeyConfigError("a JWKS must be an object with a `keys` list")
    keys: dict[str, PinnedKey] = {}
    for jwk in data["keys"]:
        try:
            pinned = _pin_jwk(jwk, allowed)
        except (KeyConfigError, JoseError, ValueError, TypeError, KeyError) as exc:
            log.warning(
                "jwks_key_skipped",
                kid=str(jwk.get("kid"))[:128] if isinstance(jwk, dict) else None,
                why=str(exc),
            )
            continue
        if pinned.kid in keys:
            raise KeyConfigError(f"the JWKS holds kid {pinned.kid!r} twice")
        keys[pinned.kid] = pinned
    return keys


def _pin_jwk(jwk: Any, allowed: list[str]) -> PinnedKey:
    if not isinstance(jwk, dict):
        raise KeyConfigError("a JWK must be an object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not KID.fullmatch(kid):
        raise KeyConfigError("a JWK needs a kid of letters, digits, '.', '_' or '-'")
    if jwk.get("use", "sig") != "sig":
        raise KeyConfigError(f"key {kid!r} is not a signing key")
    if "d" in jwk or jwk.get("kty") == "oct":
        # A JWKS is public by nature; a private or symmetric key in it is a leak, not a key.
        raise KeyConfigError(f"key {kid!r} is private or symmetric; publish public keys only")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    implied: dict[tuple[Any, Any], str] = {
        ("OKP", "Ed25519"): "EdDSA",
        ("EC", "P-256"): "ES256",
        ("EC", "P-384"): "ES384",
        ("EC", "P-521"): "ES512",
        ("RSA", None): "RS256",
    }
    if (kty, crv) not in implied:
        raise KeyConfigError(f"key {kid!r}: key type {kty!r} on curve {crv!r} is not supported")
    alg = jwk.get("alg") or implied[(kty, crv)]
    if alg not in allowed:
        raise KeyConfigError(f"key {kid!r}: algorithm {alg!r} is not allowed here")
    # Only the public parameters are imported: `key_ops`, `x5c` and the like are ignored.
    public = import_key({k: v for k, v in jwk.items() if k in PUBLIC_PARAMS}).public_key
    return PinnedKey(kid, alg, wrap_key(kid, alg, public))


class RemoteJwks:
    """A JWKS URL, fetched on first use and cached in the shared store.

    An unknown ``kid`` triggers one refetch, at most once per ``refetch_interval``
    across all instances, so a flood of random kids cannot turn the bridge against
    the key's owner; while the URL fails after the cache expired, the last good copy
    serves for up to ``stale_seconds``.
    """

    def __init__(
        self,
        cache_id: str,
        url: str,
        algorithms: Collection[str],
        store: Store,
        http: requests.Session,
        cache_seconds: int,
        refetch_interval: int,
        stale_seconds: int,
        unavailable: type[BridgeError] = KeySetUnavailable,
        timeout: float = FETCH_SECONDS,
    ) -> None:
        self._timeout = timeout
        self._id = cache_id
        self._url = url
        self._algorithms = list(algorithms)
        self._store = store
        self._http = http
        self._cache_seconds = cache_seconds
        self._refetch_interval = refetch_interval
        self._stale_seconds = stale_seconds
        self._unavailable = unavailable
        self._remote_raw: str | None = None
        self._remote: dict[str, PinnedKey] = {}

    def find(self, kid: str) -> PinnedKey | None:
        """The key named ``kid``, refetching the set once if it is not (yet) in it."""
        cached = self._store.get(self._key("jwks"))
        if cached is None:
            # Nothing cached: this fetch is fresh, so an unknown kid in it is final for
            # this call (no second fetch).
            return self._remote_keys(self._cold_fetch()).get(kid)
        keys = self._remote_keys(cached)
        if kid not in keys and self._store.add(
            self._key("jwks-refetch"), "1", self._refetch_interval
        ):
            keys = self._remote_keys(self._refresh())
        return keys.get(kid)

    def keys(self) -> dict[str, PinnedKey]:
        """Every key of the current set (for tokens that name no kid)."""
        cached = self._store.get(self._key("jwks"))
        return self._remote_keys(cached if cached is not None else self._cold_fetch())

    def _key(self, kind: str) -> str:
        return f"{kind}:{self._id}"

    def _cold_fetch(self) -> str:
        """Fetch with nothing cached: at most once per refetch interval, across instances.

        Without this gate a flood of unsigned tokens with random kids would turn every
        request into a fetch whenever the cache is empty, above all while the portal is
        down (failures are not cached). Between attempts, or when the attempt fails, the
        last good copy serves for up to ``jwks_stale_seconds``.
        """
        gate = self._key("jwks-fetch")
        if self._store.add(gate, FETCHING, self._refetch_interval):
            try:
                return self._refresh()
            except self._unavailable:
                stale = self._store.get(self._key("jwks-last-good"))
                if stale is None:
                    raise
                log.warning("jwks_stale_copy_used", connection=self._id)
                return stale
            finally:
                # However the fetch ended, whoever waits on it stops waiting.
                self._store.set(gate, FETCHED, self._refetch_interval)
        cached = self._wait_for_fetch(gate)
        if cached is not None:
            return cached
        stale = self._store.get(self._key("jwks-last-good"))
        if stale is None:
            raise self._unavailable("the JWKS is not cached and was fetched moments ago")
        return stale

    def _wait_for_fetch(self, gate: str) -> str | None:
        """The set another request is fetching right now (here or on another instance).

        The first logins after a start all find the cache empty: they wait for the one
        fetch instead of being refused. The wait ends when that fetch ends, well or
        badly (at most its timeout), so a flood while the URL is down holds no thread
        longer than the fetch itself.
        """
        # A fetch takes at most its connect and read timeouts, then the body's deadline.
        deadline = time.monotonic() + 2 * self._timeout + 1
        while time.monotonic() < deadline:
            cached = self._store.get(self._key("jwks"))
            if cached is not None:
                return cached
            if self._store.get(gate) != FETCHING:
                return None
            time.sleep(FETCH_POLL_SECONDS)
        return None

    def _refresh(self) -> str:
        raw = self._fetch()
        self._store.set(self._key("jwks"), raw, self._cache_seconds)
        self._store.set(self._key("jwks-last-good"), raw, self._stale_seconds)
        return raw

    def _remote_keys(self, raw: str) -> dict[str, PinnedKey]:
        if raw != self._remote_raw:
            # Parse once per distinct document, not once per login.
            self._remote = parse_jwks(json.loads(raw), self._algorithms)
            self._remote_raw = raw
        return self._remote

    def _fetch(self) -> str:
        url = self._url
        try:
            text = fetch_bounded(self._http, url, MAX_JWKS_BYTES, self._timeout).decode("utf-8")
            parse_jwks(json.loads(text), self._algorithms)
        except FetchError as exc:
            raise self._unavailable(f"JWKS at {exc}") from None
        except (ValueError, KeyError, KeyConfigError) as exc:
            raise self._unavailable(f"JWKS at {url}: {type(exc).__name__}") from exc
        log.info("jwks_fetched", connection=self._id, url=url)
        return text
