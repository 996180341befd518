"""The bridge as OpenID Provider toward the LMS: keys, clients, codes, tokens and claims.

Built on Authlib's server parts (the authorization-code grant, OpenID Connect's
code flow, PKCE) with everything they store kept in the shared ephemeral
store, so a code issued by one instance is redeemed on any other, exactly
once. Flask appears only in ``web/provider.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin
from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc6749.util import list_to_scope, scope_to_list
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge, create_s256_code_challenge
from authlib.oidc.core import UserInfoEndpoint
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.core.models import AuthorizationCodeMixin
from joserfc.jwk import Key
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .db import Database
from .models import BuiltinMembership, IdentityLink, OidcClient, User, utcnow
from .provider_keys import ProviderKeys
from .settings import ClientSettings, ConnectionBase, Settings
from .state import Store

MIN_RSA_BITS = 2048
CODE_PREFIX = "oidc-code:"
TOKEN_PREFIX = "oidc-at:"  # noqa: S105 - a key prefix, not a secret
GRANT_TYPE = "authorization_code"
RESPONSE_TYPE = "code"
CONFIDENTIAL_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
AUTH_METHODS = [*CONFIDENTIAL_AUTH_METHODS, "none"]
MAX_NONCE_LENGTH = 255
MAX_CLIENT_ID_LENGTH = 128
MAX_TOKEN_LENGTH = 512
EMPTY_KEYS_MESSAGE = "provider.signing_key_files is empty: run `sso-bridge certs generate`"

# Which claims each scope releases; `sub` is always there.
SCOPE_CLAIMS: dict[str, tuple[str, ...]] = {
    "openid": ("sub",),
    "profile": ("name", "given_name", "family_name", "locale"),
    "email": ("email",),
    "employee": (
        "employee_id",
        "department",
        "location",
        "manager",
        "job_title",
        "employment_status",
    ),
    "groups": ("groups", "lms_groups", "courses"),
}
SCOPES = list(SCOPE_CLAIMS)
ID_TOKEN_CLAIMS = ("iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash")
CLAIMS_SUPPORTED = [*ID_TOKEN_CLAIMS, *(c for claims in SCOPE_CLAIMS.values() for c in claims)]
# The statuses that may sign in when the person's connection is no longer configured.
DEFAULT_ACTIVE_STATUSES: list[str] = ConnectionBase.model_fields["active_statuses"].default


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# -- clients --------------------------------------------------------------------------------


def sync_clients(db: Database, settings: Settings) -> None:
    """Make the OidcClient table match ``provider.clients``; dropped clients are disabled."""
    try:
        _sync_clients(db, settings.provider.clients)
    except IntegrityError:
        # Another process inserted the same client between our read and our write:
        # the row exists now, so a second pass takes the update path.
        _sync_clients(db, settings.provider.clients)


def _sync_clients(db: Database, clients: Sequence[ClientSettings]) -> None:
    configured = {client.client_id: _client_values(client) for client in clients}
    with db.session() as session:
        rows = {row.client_id: row for row in session.scalars(select(OidcClient))}
        for client_id, values in configured.items():
            row = rows.get(client_id)
            if row is None:
                session.add(OidcClient(client_id=client_id, **values))
                continue
            changed = False
            for name, value in values.items():
                if getattr(row, name) != value:
                    setattr(row, name, value)
                    changed = True
            if changed:
                row.updated_at = utcnow()
        for client_id, row in rows.items():
            if client_id not in configured and row.enabled:
                row.enabled = False
                row.updated_at = utcnow()


def _client_values(client: ClientSettings) -> dict[str, Any]:
    secret = client.client_secret.get_secret_value() if client.client_secret else None
    return {
        # A digest only: the configured secrets are random and ≥ 32 characters, so a
        # fast hash is enough and a copy of the database does not reveal them.
        "secret_sha256": _sha256(secret) if secret is not None else None,
        "redirect_uris": list(client.redirect_uris),
        "scopes": list(client.scopes),
        "initiate_login_uri": client.initiate_login_uri,
        "require_pkce": client.require_pkce,
        "enabled": True,
    }


class ProviderClient(ClientMixin):
    """An enabled OidcClient row, as Authlib's grants see a client."""

    def __init__(self, row: OidcClient) -> None:
        self.client_id = row.client_id
        self.secret_sha256 = row.secret_sha256
        self.redirect_uris = list(row.redirect_uris)
        self.scopes = list(row.scopes)
        # Settings allow False only with a secret; checked again here, so a row edited by
        # hand cannot give a public client codes without PKCE.
        self.require_pkce = row.require_pkce or row.secret_sha256 is None
        # Authlib's userinfo endpoint reads this; empty means plain JSON, never a signed one.
        self.client_metadata: dict[str, Any] = {}

    @property
    def confidential(self) -> bool:
        return self.secret_sha256 is not None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        # OIDC Core requires redirect_uri; guessing one would let a request without it
        # send a code somewhere the LMS did not ask for.
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        """The requested scopes this client may have, in request order; unknown ones are dropped."""
        requested = scope_to_list(scope) or []
        allowed = set(self.scopes) & set(SCOPES)
        return list_to_scope(list(dict.fromkeys(s for s in requested if s in allowed)))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact string match (OAuth 2.0 Security BCP): no prefix, suffix, path or
        # case variants, so an open redirect on the LMS cannot receive our codes.
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        if self.secret_sha256 is None:
            return False
        # Comparing digests of equal length in constant time: timing reveals nothing.
        return hmac.compare_digest(_sha256(client_secret), self.secret_sha256)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint != "token":
            return False
        # A confidential client must prove its secret; `none` is for public clients only,
        # otherwise leaving the secret out would skip the check.
        if self.confidential:
            return method in CONFIDENTIAL_AUTH_METHODS
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == RESPONSE_TYPE

    def check_grant_type(self, grant_type: str) -> bool:
        # No refresh tokens: the LMS signs the person in again through the bridge session.
        return grant_type == GRANT_TYPE


# -- people ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndUser:
    """The signed-in person an authorization request is for, from the bridge session."""

    user_id: int
    public_id: str
    auth_time: int
    connection: str


@dataclass(frozen=True)
class ProviderUser:
    """A user row read once, detached from the database session, for claims and checks."""

    id: int
    public_id: str
    email: str | None
    given_name: str | None
    family_name: str | None
    display_name: str | None
    language: str | None
    department: str | None
    location: str | None
    manager: str | None
    job_title: str | None
    employment_status: str | None
    groups: tuple[str, ...]
    blocked: bool
    employee_id: str | None
    in_sync_with_lms: bool = True
    """False while a change of the person has not reached the LMS (``lms_account_id`` unset)."""
    lms_groups: tuple[str, ...] = ()
    courses: tuple[str, ...] = ()


def user_claims(user: ProviderUser, scope: str | None) -> dict[str, Any]:
    """The claims the given scope releases; absent values are left out, never null."""
    scopes = set(scope_to_list(scope) or [])
    claims: dict[str, Any] = {"sub": user.public_id}
    if "profile" in scopes:
        full = " ".join(p for p in (user.given_name, user.family_name) if p)
        claims.update(
            name=user.display_name or full or None,
            given_name=user.given_name,
            family_name=user.family_name,
            locale=user.language,
        )
    if "email" in scopes:
        # email_verified is left out: the bridge cannot vouch for what the HR side sent.
        claims["email"] = user.email
    if "employee" in scopes:
        claims.update(
            employee_id=user.employee_id,
            department=user.department,
            location=user.location,
            manager=user.manager,
            job_title=user.job_title,
            employment_status=user.employment_status,
        )
    if "groups" in scopes:
        claims["groups"] = list(user.groups)
        # The built-in LMS's own memberships, granted by the rules (empty elsewhere).
        claims["lms_groups"] = list(user.lms_groups) or None
        claims["courses"] = list(user.courses) or None
    return {name: value for name, value in claims.items() if value is not None}


# -- codes and tokens -----------------------------------------------------------------------


@dataclass(frozen=True)
class AuthorizationCode(AuthorizationCodeMixin):
    """One authorization code's record, as kept in the store under the code's digest."""

    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    auth_time: int
    # None only for a client with require_pkce = false that sent no challenge.
    code_challenge: str | None
    code_challenge_method: str | None
    user_id: int
    connection: str
    expires_at: int

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


@dataclass(frozen=True)
class AccessToken(TokenMixin):
    """A live access token: what it grants, to whom, and the user as of now."""

    client: ProviderClient
    user: ProviderUser
    scope: str
    expires_at: int

    def check_client(self, client: ProviderClient) -> bool:
        return client.client_id == self.client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, self.expires_at - int(time.time()))

    def is_expired(self) -> bool:
        return self.expires_at <= int(time.time())

    def is_revoked(self) -> bool:
        return False

    def get_client(self) -> ProviderClient:
        return self.client

    def get_user(self) -> ProviderUser:
        return self.user


@dataclass
class Provider:
    """What the OpenID Provider needs from one bridge process, without Flask."""

    settings: Settings
    db: Database
    store: Store
    keys: ProviderKeys

    @property
    def issuer(self) -> str:
        return self.settings.base_url

    def query_client(self, client_id: str | None) -> ProviderClient | None:
        """The enabled client with this id, or None."""
        if not client_id or len(client_id) > MAX_CLIENT_ID_LENGTH:
            return None
        with self.db.session() as session:
            row = session.get(OidcClient, client_id)
            return ProviderClient(row) if row is not None and row.enabled else None

    def load_user(self, user_id: int) -> ProviderUser | None:
        """The user as stored now, with the subject of their first identity link."""
        with self.db.session() as session:
            user = session.get(User, user_id)
            if user is None:
                return None
            employee_id = session.scalars(
                select(IdentityLink.subject)
                .where(IdentityLink.user_id == user.id)
                .order_by(IdentityLink.id)
                .limit(1)
            ).first()
            memberships = session.scalars(
                select(BuiltinMembership).where(BuiltinMembership.user_id == user.id)
            ).all()
            return ProviderUser(
                id=user.id,
                public_id=user.public_id,
                email=user.email,
                given_name=user.given_name,
                family_name=user.family_name,
                display_name=user.display_name,
                language=user.language,
                department=user.department,
                location=user.location,
                manager=user.manager,
                job_title=user.job_title,
                employment_status=user.employment_status,
                groups=tuple(user.groups or ()),
                blocked=user.blocked,
                employee_id=employee_id,
                in_sync_with_lms=user.lms_account_id is not None,
                lms_groups=tuple(sorted(m.name for m in memberships if m.kind == "group")),
                courses=tuple(sorted(m.name for m in memberships if m.kind == "course")),
            )

    def may_sign_in(self, user: ProviderUser, connection: str) -> bool:
        """False for a blocked user or a leaver, judged by their connection's active statuses,
        and for a user whose latest change the LMS has not taken."""
        if user.blocked:
            return False
        if not user.in_sync_with_lms:
            # The bridge's record is newer than the LMS account (its update failed, or is
            # refused: say the new e-mail is another account's). Claims from that record
            # could match the LMS login to someone else's account: no tokens until a login
            # brings the LMS in line.
            return False
        if user.employment_status is None:
            return True
        spec = self.settings.connections.get(connection)
        statuses = spec.active_statuses if spec is not None else DEFAULT_ACTIVE_STATUSES
        return user.employment_status.lower() in {s.lower() for s in statuses}

    def active_user(self, user_id: int, connection: str) -> ProviderUser | None:
        """The user, if they exist and may still sign in; None otherwise."""
        user = self.load_user(user_id)
        if user is None or not self.may_sign_in(user, connection):
            return None
        return user

    # Codes: stored under the digest of the code, so a dump of the store holds no usable code.

    def save_code(self, code: str, record: AuthorizationCode) -> None:
        lifetime = self.settings.provider.code_lifetime
        self.store.set(CODE_PREFIX + _sha256(code), json.dumps(asdict(record)), lifetime)

    def take_code(self, code: str) -> AuthorizationCode | None:
        """The code's record, removed in one atomic step: a code works once, on any instance."""
        raw = self.store.pop(CODE_PREFIX + _sha256(code))
        if raw is None:
            return None
        record = AuthorizationCode(**json.loads(raw))
        # The store's TTL already expires it; this check holds even if a store's clock drifts.
        if record.expires_at <= int(time.time()):
            return None
        return record

    def code_expiry(self) -> int:
        return int(time.time()) + self.settings.provider.code_lifetime

    # Access tokens: opaque, only for userinfo, kept under their digest until they expire.

    def new_access_token(self, **_: Any) -> str:
        return secrets.token_urlsafe(32)

    def save_access_token(
        self, token: str, user_id: int, client_id: str, scope: str, connection: str
    ) -> None:
        lifetime = self.settings.provider.access_token_lifetime
        record = {
            "user_id": user_id,
            "client_id": client_id,
            "scope": scope,
            "connection": connection,
            "expires_at": int(time.time()) + lifetime,
        }
        self.store.set(TOKEN_PREFIX + _sha256(token), json.dumps(record), lifetime)

    def find_access_token(self, token: str) -> AccessToken | None:
        """The live token, or None when unknown, expired, or its user or client is gone."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        raw = self.store.get(TOKEN_PREFIX + _sha256(token))
        if raw is None:
            return None
        record = json.loads(raw)
        if record["expires_at"] <= int(time.time()):
            return None
        client = self.query_client(record["client_id"])
        # Checked on every use: a leaver blocked after the login loses userinfo at once.
        user = self.active_user(record["user_id"], record["connection"])
        if client is None or user is None:
            return None
        return AccessToken(
            client=client, user=user, scope=record["scope"], expires_at=record["expires_at"]
        )

    def id_token_claims(self, client: ProviderClient) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.issuer,
            "aud": client.get_client_id(),
            "iat": now,
            "exp": now + self.settings.provider.id_token_lifetime,
        }


# -- Authlib grants and extensions -----------------------------------------------------------


def _provider(server: Any) -> Provider:
    provider: Provider = server.provider
    return provider


class S256CodeChallenge(CodeChallenge):
    """PKCE with S256 only, required unless the client is confidential and opted out.

    Authlib's CodeChallenge(required=True) lets every confidential client skip
    PKCE and allows `plain`. Here a client with ``require_pkce`` (the default, and
    always for a public client) never gets a code without an S256 challenge; a
    client without it may leave PKCE out, but a challenge it does send must be
    S256 and is verified like any other. At the token endpoint Authlib refuses a
    code with a challenge but no verifier, and a verifier for a code without a
    challenge (RFC 9700 4.8: no PKCE downgrade).
    """

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]
    CODE_CHALLENGE_METHODS: ClassVar[dict[str, Callable[[str, str], bool]]] = {
        "S256": lambda verifier, challenge: hmac.compare_digest(
            create_s256_code_challenge(verifier), challenge
        ),
    }

    def __init__(self) -> None:
        super().__init__(required=True)

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        client: ProviderClient = grant.request.client
        if not data.get("code_challenge") and not data.get("code_challenge_method"):
            if client.require_pkce:
                raise InvalidRequestError("PKCE is required: send code_challenge with method S256.")
            # A confidential client that opted out (settings allow it only with a secret).
            # Its secret stops a stolen code being redeemed by someone else, not an
            # attacker injecting a victim's code into their own login at the client: for
            # that, RFC 9700 2.1.1 accepts the OpenID Connect nonce instead of PKCE, so
            # without PKCE the request must be OpenID Connect and carry a nonce, which the
            # ID token echoes and the client checks against the login it started.
            if "openid" not in (grant.request.payload.scope or "").split():
                raise InvalidRequestError("Without PKCE the scope must include openid.")
            if not data.get("nonce"):
                raise InvalidRequestError("Without PKCE a nonce is required.")
            return
        if not data.get("code_challenge"):
            raise InvalidRequestError("code_challenge_method was sent without code_challenge.")
        # `plain` would put the verifier itself in the browser's URL: refused, and so is
        # a missing method, which RFC 7636 says means `plain`.
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256.")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        client: ProviderClient = grant.request.client
        code: AuthorizationCode = grant.request.authorization_code
        # The client's policy may have changed to require PKCE while this code was
        # outstanding: a code issued without a challenge then buys nothing.
        if client.require_pkce and not code.code_challenge:
            raise InvalidGrantError("The code was issued without PKCE, which this client needs.")
        super().validate_code_verifier(grant, result)


class BridgeAuthorizationCodeGrant(AuthorizationCodeGrant):
    """The authorization-code grant with codes in the shared store, single use."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_authorization_request(self) -> str:
        redirect_uri: str = super().validate_authorization_request()
        # Only OpenID Connect: a plain OAuth request would get a token without knowing who.
        if "openid" not in (scope_to_list(self.request.scope) or []):
            raise InvalidScopeError("The scope must include openid.", redirect_uri=redirect_uri)
        nonce = self.request.payload.data.get("nonce")
        if nonce is not None and len(nonce) > MAX_NONCE_LENGTH:
            raise InvalidRequestError("The nonce is too long.", redirect_uri=redirect_uri)
        return redirect_uri

    def generate_authorization_code(self) -> str:
        return secrets.token_urlsafe(32)

    def save_authorization_code(self, code: str, request: Any) -> None:
        user: EndUser = request.user
        data = request.payload.data
        provider = _provider(self.server)
        provider.save_code(
            code,
            AuthorizationCode(
                client_id=request.client.get_client_id(),
                redirect_uri=request.payload.redirect_uri,
                scope=request.scope,
                nonce=data.get("nonce") or None,
                auth_time=user.auth_time,
                code_challenge=data.get("code_challenge") or None,
                code_challenge_method=data.get("code_challenge_method") or None,
                user_id=user.user_id,
                connection=user.connection,
                expires_at=provider.code_expiry(),
            ),
        )

    def query_authorization_code(
        self, code: str, client: ProviderClient
    ) -> AuthorizationCode | None:
        record = _provider(self.server).take_code(code)
        # Taken before this check on purpose: a code presented by the wrong client has
        # leaked, so it is burnt rather than left for a second try.
        if record is None or record.client_id != client.get_client_id():
            return None
        return record

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        return None  # already removed by take_code, atomically

    def authenticate_user(self, authorization_code: AuthorizationCode) -> ProviderUser:
        user = _provider(self.server).active_user(
            authorization_code.user_id, authorization_code.connection
        )
        if user is None:
            # Blocked or gone between the code and its redemption: no tokens.
            raise InvalidGrantError("The user may not sign in.")
        return user


class BridgeOpenIDCode(OpenIDCode):
    """ID tokens for the code flow, signed with the provider's first key."""

    def __init__(self, provider: Provider) -> None:
        # The nonce is optional, and echoed when sent.
        super().__init__(require_nonce=False)
        self.provider = provider

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        # Replay of a nonce is the RP's check (it compares the ID token's nonce with the one
        # it sent); codes are single use and bound to their client (PKCE, or the secret of a
        # client without it), so the OP keeps no nonce list.
        return False

    def resolve_client_private_key(self, client: ProviderClient) -> Key:
        return self.provider.keys.signing.key

    def get_client_algorithm(self, client: ProviderClient) -> str:
        return self.provider.keys.signing.alg

    def get_encode_header(self, client: ProviderClient) -> dict[str, str]:
        signing = self.provider.keys.signing
        return {"alg": signing.alg, "kid": signing.kid, "typ": "JWT"}

    def get_client_claims(self, client: ProviderClient) -> dict[str, Any]:
        return self.provider.id_token_claims(client)

    def generate_user_info(self, user: ProviderUser, scope: str) -> dict[str, Any]:
        return user_claims(user, scope)


class BridgeUserInfoEndpoint(UserInfoEndpoint):
    """Userinfo as plain JSON, with the claims the access token's scope releases."""

    def __init__(self, provider: Provider, resource_protector: Any) -> None:
        super().__init__(resource_protector=resource_protector)
        self.provider = provider

    def generate_user_info(self, user: ProviderUser, scope: str) -> dict[str, Any]:
        return user_claims(user, scope)

    def get_issuer(self) -> str:
        return self.provider.issuer

    def resolve_private_key(self) -> Key:
        return self.provider.keys.signing.key


class BridgeBearerTokenValidator(BearerTokenValidator):
    """Bearer access tokens looked up in the shared store."""

    def __init__(self, provider: Provider) -> None:
        super().__init__()
        self.provider = provider

    def authenticate_token(self, token_string: str) -> AccessToken | None:
        return self.provider.find_access_token(token_string)


def save_token(provider: Provider, token: dict[str, Any], request: Any) -> None:
    """Keep an issued access token (Authlib's save_token hook); there are no refresh tokens."""
    provider.save_access_token(
        token["access_token"],
        user_id=request.user.id,
        client_id=request.client.get_client_id(),
        scope=token.get("scope", ""),
        connection=request.authorization_code.connection,
    )
