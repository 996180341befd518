"""OpenID Connect and plain OAuth2 logins: the bridge as a client, on Authlib.

Authlib builds the authorization request (with PKCE S256) and makes the token
request with the configured client authentication. The ID token is verified
here, with the key and algorithm pinned by the bridge (never taken from the
token), and every check maps to a reason code, as the OpenID Foundation's
relying-party tests expect: issuer exact, audience and azp, expiry and age,
nonce, and userinfo merged only for the same subject. The login transaction
(state, nonce, PKCE verifier, where to go next) lives server-side in the shared
store, is single use, and is bound to the browser that started it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, RSAKey, import_key

from .. import errors
from ..fetch import FetchError, fetch_bounded, pooled
from ..identity import map_identity
from ..jwks import PinnedKey, RemoteJwks
from ..settings import OAuth2Connection, OidcConnection, https_or_loopback
from ..state import Store
from .base import Verified

# How long a person may take at the provider before the callback is refused.
TRANSACTION_TTL = 10 * 60
MAX_DOCUMENT_BYTES = 256 * 1024
BROWSER_COOKIE_PREFIX = "sso_bridge_oidc_"
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})
DISCOVERED_URLS = (
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
    "jwks_uri",
    "end_session_endpoint",
)
REQUIRED_ID_TOKEN_CLAIMS = ("iss", "sub", "aud", "exp", "iat")
# Claims about the token itself: userinfo may add profile claims, never replace these.
TOKEN_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "azp", "auth_time"})

# Identity field → claim names, tried in order: the standard claims first, then the
# names Entra ID, Okta and Keycloak use for the same thing.
DEFAULT_CLAIMS: dict[str, tuple[str, ...]] = {
    "email": ("email", "mail", "upn"),
    "given_name": ("given_name",),
    "family_name": ("family_name",),
    "display_name": ("name",),
    "department": ("department",),
    "location": ("location", "city", "office_location"),
    "language": ("locale",),
    "manager": ("manager_id", "manager"),
    "job_title": ("job_title", "jobTitle", "title"),
    "groups": ("groups", "roles"),
    "employment_status": ("employment_status", "employmentStatus"),
    "hire_date": ("hire_date", "hireDate"),
}


@dataclass(frozen=True)
class LoginStart:
    url: str
    state: str
    browser_secret: str


@dataclass(frozen=True)
class Endpoints:
    authorization: str
    token: str
    userinfo: str | None = None
    jwks: str | None = None
    end_session: str | None = None
    iss_parameter: bool = False


class OidcConnector:
    """One OpenID Connect or OAuth2 connection."""

    def __init__(
        self,
        connection_id: str,
        settings: OidcConnection | OAuth2Connection,
        base_url: str,
        store: Store,
        http: requests.Session,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection_id = connection_id
        self.settings = settings
        # A distinct redirect URI per connection: a code can only come back to the
        # connection whose provider issued it.
        self.redirect_uri = f"{base_url}/oidc/{connection_id}/callback"
        self._secure = base_url.startswith("https://")
        self._store = store
        self._http = http
        self._clock = clock
        self._signing_key = _client_key(settings)
        self._jwks: RemoteJwks | None = None

    @property
    def is_oidc(self) -> bool:
        return self.settings.type == "oidc"

    # -- the provider's endpoints ----------------------------------------------------------

    def endpoints(self) -> Endpoints:
        """The provider's endpoints: configured by hand, or from discovery (cached)."""
        settings = self.settings
        if isinstance(settings, OAuth2Connection):
            return Endpoints(settings.authorization_endpoint, settings.token_endpoint)
        document = self._discovery() if self._needs_discovery() else {}
        authorization = settings.authorization_endpoint or document.get("authorization_endpoint")
        token = settings.token_endpoint or document.get("token_endpoint")
        jwks_uri = settings.jwks_uri or document.get("jwks_uri")
        if not authorization or not token or not jwks_uri:
            raise errors.OidcDiscoveryInvalid("authorization, token or jwks endpoint unknown")
        return Endpoints(
            authorization=authorization,
            token=token,
            userinfo=settings.userinfo_endpoint or document.get("userinfo_endpoint"),
            jwks=jwks_uri,
            end_session=settings.end_session_endpoint or document.get("end_session_endpoint"),
            iss_parameter=bool(document.get("authorization_response_iss_parameter_supported")),
        )

    def _needs_discovery(self) -> bool:
        settings = self.settings
        assert isinstance(settings, OidcConnection)
        return not (
            settings.authorization_endpoint and settings.token_endpoint and settings.jwks_uri
        )

    def _discovery(self) -> dict[str, Any]:
        settings = self.settings
        assert isinstance(settings, OidcConnection)
        url = settings.discovery_url or (
            settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        )
        # Keyed on the URL too: after a configuration change (or with another deployment
        # on the same Redis) an old document is never taken for the new provider's.
        key = f"oidc-discovery:{self.connection_id}:{_digest(url)[:16]}"
        raw = self._store.get(key)
        if raw is None:
            try:
                raw = fetch_bounded(self._http, url, MAX_DOCUMENT_BYTES, settings.timeout).decode()
            except (FetchError, UnicodeDecodeError) as exc:
                raise errors.OidcProviderUnavailable(f"discovery: {exc}") from None
            document = _json_object(raw, errors.OidcDiscoveryInvalid, "discovery")
            # The document must describe the configured issuer exactly: otherwise its
            # endpoints and keys belong to someone else (OIDC Discovery 4.3).
            if document.get("issuer") != settings.issuer:
                raise errors.OidcDiscoveryInvalid(
                    f"discovery names issuer {str(document.get('issuer'))[:200]!r}"
                )
            self._store.set(key, raw, settings.jwks_cache_seconds)
        document = _json_object(raw, errors.OidcDiscoveryInvalid, "discovery")
        if document.get("issuer") != settings.issuer:
            raise errors.OidcDiscoveryInvalid("the cached discovery names another issuer")
        for name in DISCOVERED_URLS:
            value = document.get(name)
            if value is not None:
                try:
                    if not isinstance(value, str):
                        raise ValueError(name)
                    https_or_loopback(value)
                except ValueError:
                    raise errors.OidcDiscoveryInvalid(f"{name} is not an https URL") from None
        return document

    def _key_set(self, jwks_uri: str) -> RemoteJwks:
        settings = self.settings
        assert isinstance(settings, OidcConnection)
        if self._jwks is None:
            self._jwks = RemoteJwks(
                f"oidc:{self.connection_id}",
                jwks_uri,
                settings.id_token_algorithms,
                self._store,
                self._http,
                settings.jwks_cache_seconds,
                settings.jwks_refetch_interval,
                settings.jwks_cache_seconds,
                unavailable=errors.OidcProviderUnavailable,
                timeout=settings.timeout,
            )
        return self._jwks

    # -- starting a login ---------------------------------------------------------------------

    def begin(self, next_url: str) -> LoginStart:
        """The provider URL that starts a login; the transaction is kept for the callback."""
        endpoints = self.endpoints()
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        browser = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(32) if self.is_oidc else None
        client = self._client()
        extra: dict[str, Any] = {}
        if nonce is not None:
            extra["nonce"] = nonce
        pkce = self.is_oidc or getattr(self.settings, "use_pkce", True)
        url, _ = client.create_authorization_url(
            endpoints.authorization,
            state=state,
            code_verifier=verifier if pkce else None,
            **extra,
        )
        transaction = {
            "nonce": nonce,
            "verifier": verifier if pkce else None,
            "next": next_url,
            "browser": _digest(browser),
        }
        self._store.set(self._transaction_key(state), json.dumps(transaction), TRANSACTION_TTL)
        return LoginStart(url, state, browser)

    def browser_cookie(self, state: str) -> str:
        """One cookie per transaction, so logins in two tabs do not collide.

        On https it carries the `__Host-` prefix (host-only, path /, Secure), so a
        sibling subdomain cannot plant one to bind its own login to a victim's browser.
        """
        prefix = "__Host-" if self._secure else ""
        return f"{prefix}{BROWSER_COOKIE_PREFIX}{self.connection_id}_{_digest(state)[:16]}"

    def _transaction_key(self, state: str) -> str:
        return f"oidc-txn:{self.connection_id}:{_digest(state)}"

    def _client(self) -> OAuth2Session:
        settings = self.settings
        scopes = settings.scopes or (["openid", "profile", "email"] if self.is_oidc else [])
        secret = settings.client_secret.get_secret_value() if settings.client_secret else None
        client = OAuth2Session(
            client_id=settings.client_id,
            client_secret=self._signing_key
            if settings.client_auth_method == "private_key_jwt"
            else secret,
            token_endpoint_auth_method=settings.client_auth_method,
            redirect_uri=self.redirect_uri,
            scope=" ".join(scopes) or None,
            code_challenge_method="S256",
        )
        pooled(client, self._http)
        return client

    # -- the callback ---------------------------------------------------------------------------

    def complete(
        self, request_data: Mapping[str, str], cookies: Mapping[str, str] | None = None
    ) -> Verified:
        """Check the callback, redeem the code, verify what the provider says about the person."""
        state = request_data.get("state")
        if not state:
            raise errors.OidcStateMissing("the callback has no state")
        raw = self._store.get(self._transaction_key(state))
        if raw is None:
            raise errors.OidcStateUnknown("no pending login for this state")
        transaction: dict[str, Any] = json.loads(raw)
        browser = (cookies or {}).get(self.browser_cookie(state), "")
        if not hmac.compare_digest(transaction["browser"], _digest(browser)):
            # Checked before the transaction is used up: a stranger who learnt the state
            # cannot cancel the real browser's login by calling back first.
            raise errors.OidcBrowserMismatch("the callback arrived in another browser")
        # Then taken, atomically: a transaction serves one callback, so a replayed
        # callback (or a second code for the same state) finds nothing.
        if self._store.pop(self._transaction_key(state)) is None:
            raise errors.OidcStateUnknown("the pending login was completed meanwhile")
        if request_data.get("error"):
            raise errors.OidcProviderError(
                f"{request_data['error'][:64]}: {request_data.get('error_description', '')[:200]}"
            )
        endpoints = self.endpoints()
        self._check_iss_parameter(request_data.get("iss"), endpoints)
        code = request_data.get("code")
        if not code:
            raise errors.OidcProviderError("the callback has neither a code nor an error")
        token = self._redeem(endpoints, code, transaction.get("verifier"))
        if isinstance(self.settings, OidcConnection):
            claims = self._verify_id_token(token.get("id_token"), transaction["nonce"], endpoints)
            claims = self._merge_userinfo(claims, token, endpoints)
            subject = claims.get(self.settings.subject_claim)
            session = {"id_token": token["id_token"]}
        else:
            claims = self._profile(token)
            subject = _dotted(claims, self.settings.subject_field)
            session = {}
        if subject is None or isinstance(subject, bool) or not isinstance(subject, str | int):
            raise errors.OidcClaimMissing("the stable subject is missing or not a string")
        self._check_allowed_values(claims)
        identity = map_identity(
            self.connection_id, self.settings, str(subject), claims, DEFAULT_CLAIMS
        )
        return Verified(
            identity=identity, next=transaction["next"], session=session, request_id=state
        )

    def _check_iss_parameter(self, iss: str | None, endpoints: Endpoints) -> None:
        """RFC 9207: the callback names its provider, so an answer from another (mix-up
        attack) cannot be fed into this connection's token request."""
        if not isinstance(self.settings, OidcConnection):
            return
        if iss is None:
            if endpoints.iss_parameter:
                raise errors.OidcIssuerParameterMismatch(
                    "the provider sends iss, this one has none"
                )
            return
        if iss != self.settings.issuer:
            raise errors.OidcIssuerParameterMismatch(f"callback iss {iss[:200]!r}")

    def _redeem(self, endpoints: Endpoints, code: str, verifier: str | None) -> dict[str, Any]:
        client = self._client()
        if self.settings.client_auth_method == "private_key_jwt":
            client.register_client_auth_method(self._client_assertion(endpoints))
        try:
            token = client.fetch_token(
                endpoints.token,
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
                timeout=self.settings.timeout,
                # A redirect would re-post the code, the verifier and the client's
                # credentials to wherever it points.
                allow_redirects=False,
            )
        except AuthlibBaseError as exc:
            raise errors.OidcTokenRequestFailed(f"token endpoint: {exc.error}") from None
        except requests.RequestException as exc:
            raise errors.OidcProviderUnavailable(f"token endpoint: {type(exc).__name__}") from None
        except (ValueError, TypeError) as exc:
            raise errors.OidcTokenRequestFailed(f"token endpoint: {exc}") from None
        if not isinstance(token, dict) or not token.get("access_token"):
            raise errors.OidcTokenRequestFailed("the token response has no access_token")
        return dict(token)

    def _client_assertion(self, endpoints: Endpoints) -> PrivateKeyJWT:
        """private_key_jwt with the configured key: its own algorithm, its kid, 60 seconds.

        Authlib's default would treat every key as RSA and let the assertion live an
        hour. The audience is the token endpoint (RFC 7523), or the issuer for OpenID
        providers, which is what the OpenID Foundation now recommends.
        """
        key = self._signing_key
        assert key is not None
        alg = "ES256" if isinstance(key, ECKey) else "RS256"
        audience = (
            self.settings.issuer if isinstance(self.settings, OidcConnection) else endpoints.token
        )
        now = int(self._clock())
        return PrivateKeyJWT(
            endpoints.token,
            alg=alg,
            headers={"kid": key.thumbprint()},
            claims={"aud": audience, "iat": now, "exp": now + 60},
        )

    # -- the ID token -------------------------------------------------------------------------

    def _verify_id_token(self, id_token: Any, nonce: str, endpoints: Endpoints) -> dict[str, Any]:
        settings = self.settings
        assert isinstance(settings, OidcConnection) and endpoints.jwks
        if not isinstance(id_token, str) or id_token.count(".") != 2:
            raise errors.OidcIdTokenMalformed("no ID token, or not a compact JWS")
        header_b64, payload_b64, signature = id_token.split(".")
        header = _json_object(_b64(header_b64), errors.OidcIdTokenMalformed, "header")
        alg = header.get("alg")
        # The algorithm is pinned by configuration; "none" or an HMAC keyed with the
        # client secret can never be chosen by the token.
        if not isinstance(alg, str) or alg not in settings.id_token_algorithms:
            raise errors.OidcAlgorithmForbidden(f"alg {str(alg)[:32]!r} is not accepted")
        if FORBIDDEN_HEADERS.intersection(header):
            raise errors.OidcIdTokenMalformed("the header tries to name its own key")
        if not signature:
            raise errors.OidcSignatureInvalid("the ID token is unsigned")
        key = self._id_token_key(header.get("kid"), alg, self._key_set(endpoints.jwks))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # joserfc's note on the name "EdDSA"
                jws.deserialize_compact(id_token, key.key, algorithms=[alg])
        except BadSignatureError:
            raise errors.OidcSignatureInvalid("the ID token's signature does not verify") from None
        except JoseError as exc:
            raise errors.OidcSignatureInvalid(
                f"verification failed: {type(exc).__name__}"
            ) from None
        claims = _json_object(_b64(payload_b64), errors.OidcIdTokenMalformed, "payload")
        self._check_id_token_claims(claims, nonce)
        return claims

    def _id_token_key(self, kid: Any, alg: str, key_set: RemoteJwks) -> PinnedKey:
        if kid is not None:
            if not isinstance(kid, str) or len(kid) > 256:
                raise errors.OidcIdTokenMalformed("kid is not a string")
            key = key_set.find(kid)
            if key is None:
                raise errors.OidcKeyUnknown(f"no key with kid {kid[:64]!r}")
        else:
            # Without a kid the key is unambiguous only if the set holds exactly one key
            # for this algorithm (OIDC Core 10.1).
            candidates = [k for k in key_set.keys().values() if k.alg == alg]
            if len(candidates) != 1:
                raise errors.OidcKeyUnknown(f"no kid, and {len(candidates)} keys for {alg}")
            key = candidates[0]
        if key.alg != alg:
            raise errors.OidcAlgorithmForbidden(f"key {key.kid!r} is for {key.alg}, not {alg}")
        return key

    def _check_id_token_claims(self, claims: dict[str, Any], nonce: str) -> None:
        settings = self.settings
        assert isinstance(settings, OidcConnection)
        for name in REQUIRED_ID_TOKEN_CLAIMS:
            if name not in claims:
                raise errors.OidcClaimMissing(f"claim {name} is missing", claim=name)
        if claims["iss"] != settings.issuer:
            raise errors.OidcIssuerMismatch(f"iss {str(claims['iss'])[:200]!r}")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if settings.client_id not in audiences:
            raise errors.OidcAudienceMismatch("aud does not name this client")
        azp = claims.get("azp")
        # With several audiences the token must say it was issued to us (OIDC Core 3.1.3.7).
        if (len(audiences) > 1 and azp is None) or (azp is not None and azp != settings.client_id):
            raise errors.OidcAudienceMismatch("azp is missing or names another client")
        for name in ("exp", "iat"):
            if isinstance(claims[name], bool) or not isinstance(claims[name], int | float):
                raise errors.OidcIdTokenMalformed(f"{name} is not a number")
        now = self._clock()
        if now > claims["exp"] + settings.leeway:
            raise errors.OidcExpired(f"expired {now - claims['exp']:.0f}s ago")
        if claims["iat"] > now + settings.leeway:
            raise errors.OidcNotYetValid(f"iat {claims['iat'] - now:.0f}s in the future")
        if now - claims["iat"] > settings.max_token_age:
            raise errors.OidcExpired(f"issued {now - claims['iat']:.0f}s ago")
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            raise errors.OidcNonceMismatch("the nonce is not the one this login sent")

    def _merge_userinfo(
        self, claims: dict[str, Any], token: dict[str, Any], endpoints: Endpoints
    ) -> dict[str, Any]:
        settings = self.settings
        assert isinstance(settings, OidcConnection)
        if not settings.use_userinfo or not endpoints.userinfo:
            return claims
        userinfo = self._get_json(endpoints.userinfo, token["access_token"], "userinfo")
        # Userinfo about another subject is a substitution attack (OIDC Core 5.3.4).
        if userinfo.get("sub") != claims["sub"]:
            raise errors.OidcUserinfoMismatch("userinfo describes another subject")
        # Userinfo adds claims and never replaces one the signed ID token made: the subject
        # and the tenant or domain restrictions must rest on what the provider signed.
        merged = dict(claims)
        merged.update(
            {k: v for k, v in userinfo.items() if k not in TOKEN_CLAIMS and k not in claims}
        )
        return merged

    def _profile(self, token: dict[str, Any]) -> dict[str, Any]:
        settings = self.settings
        assert isinstance(settings, OAuth2Connection)
        return self._get_json(settings.profile_url, token["access_token"], "profile")

    def _get_json(self, url: str, access_token: str, what: str) -> dict[str, Any]:
        session = pooled(requests.Session(), self._http)
        session.headers["Authorization"] = f"Bearer {access_token}"
        try:
            raw = fetch_bounded(session, url, MAX_DOCUMENT_BYTES, self.settings.timeout)
        except FetchError as exc:
            raise errors.OidcProviderUnavailable(f"{what}: {exc}") from None
        return _json_object(raw, errors.OidcTokenRequestFailed, what)

    def _check_allowed_values(self, claims: Mapping[str, Any]) -> None:
        for name, allowed in self.settings.allowed_claim_values.items():
            value = claims.get(name)
            if not isinstance(value, str) or value not in allowed:
                raise errors.OidcClaimNotAllowed(f"{name}={str(value)[:100]!r}")

    # -- logout -------------------------------------------------------------------------------

    def logout_url(self, session: Mapping[str, Any], after: str) -> str | None:
        """RP-initiated logout at the provider, when it offers it."""
        if not self.is_oidc:
            return None
        endpoint = self.endpoints().end_session
        if not endpoint:
            return None
        params = {"client_id": self.settings.client_id, "post_logout_redirect_uri": after}
        if session.get("id_token"):
            params["id_token_hint"] = session["id_token"]
        separator = "&" if "?" in endpoint else "?"
        return endpoint + separator + urlencode(params)


def _client_key(settings: OidcConnection | OAuth2Connection) -> ECKey | RSAKey | None:
    """The private_key_jwt key, checked at start: RSA (at least 2048 bits) or EC P-256."""
    if settings.client_key_file is None:
        return None
    key = import_key(settings.client_key_file.read_bytes())
    if isinstance(key, RSAKey) and key.public_key.key_size >= 2048:
        return key
    if isinstance(key, ECKey) and key.curve_name == "P-256":
        return key
    raise ValueError(f"{settings.client_key_file}: private_key_jwt needs RSA >= 2048 or EC P-256")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _b64(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise errors.OidcIdTokenMalformed("not base64url") from None


def _json_object(raw: bytes | str, error: type[errors.BridgeError], what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError):
        raise error(f"the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise error(f"the {what} is not a JSON object")
    return value


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; an exp of Infinity must not mean "never expires".
    raise ValueError(name)


def _dotted(document: Mapping[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
