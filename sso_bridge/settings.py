"""The validated configuration: one TOML file, overridable from the environment.

Sources, strongest first: keyword arguments (tests), environment variables
(``SSO_BRIDGE_`` prefix, ``__`` between nested keys), files in the secrets
directory (``SSO_BRIDGE_SECRETS_DIR``, one file per key, named like the
environment variable without its prefix), the TOML file named by
``SSO_BRIDGE_CONFIG``, and the defaults below. Everything is validated once,
at start; an invalid value stops the start with a message naming the key.

Each field's docstring is its documentation: docs/configuration.md is checked
against this model by a test.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "SSO_BRIDGE_CONFIG"
SECRETS_DIR_ENV = "SSO_BRIDGE_SECRETS_DIR"

# A connection id appears in URLs that IdP admins paste into their systems: keep it a slug.
SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# Key ids are compared, never used as paths; the pattern gives bad ones a clear error.
KID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# A Moodle plugin name, as PARAM_AUTH accepts it (a typo would make Moodle refuse every create).
MOODLE_PLUGIN = re.compile(r"[a-z][a-z0-9_]*[a-z0-9]")

TokenAlgorithm = Literal["EdDSA", "ES256", "RS256", "HS256"]
IdentityField = Literal[
    "email",
    "given_name",
    "family_name",
    "display_name",
    "department",
    "location",
    "language",
    "manager",
    "job_title",
    "groups",
    "employment_status",
    "hire_date",
]


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one line per key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


class Section(BaseModel):
    """A configuration table: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


def https_or_loopback(url: str) -> str:
    """Accept https URLs, and http only on loopback (local demos and tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return url
    raise ValueError("must be an https URL (http is allowed only on 127.0.0.1 or localhost)")


class DatabaseSettings(Section):
    url: str = "sqlite:///var/sso-bridge.db"
    """SQLAlchemy URL of the durable store: `sqlite:///path` or `postgresql+psycopg://user@host/db`."""
    migrate_on_start: bool = True
    """Apply Alembic migrations when `serve` or `demo` starts (before any worker forks)."""
    pool_size: int = Field(default=5, ge=1, le=100)
    """Connections kept open per process (PostgreSQL only)."""


class StoreSettings(Section):
    url: SecretStr | None = None
    """Redis URL (`redis://`, `rediss://`) for state shared between instances. Unset: an in-process store, for one process only."""
    key_prefix: str = "sso-bridge:"
    """Prefix of every key the bridge writes, so several deployments can share one Redis."""
    timeout: float = Field(default=2.0, gt=0, le=30)
    """Seconds to wait for Redis before refusing the login (fail closed)."""


class SessionSettings(Section):
    lifetime: int = Field(default=8 * 3600, ge=60, le=7 * 24 * 3600)
    """Seconds a bridge session lasts; within it the LMS can sign the person in again without the portal."""
    cookie_name: str = "sso_bridge_session"
    """Name of the bridge's session cookie (HttpOnly, SameSite=Lax, Secure when the base URL is https)."""


class LimitsSettings(Section):
    max_request_bytes: int = Field(default=512 * 1024, ge=4096, le=10 * 1024 * 1024)
    """Largest request body accepted, in bytes; larger ones get a 413."""
    max_token_bytes: int = Field(default=8 * 1024, ge=512, le=64 * 1024)
    """Largest signed handoff token accepted, in bytes."""
    logins_per_minute: int = Field(default=60, ge=1, le=100_000)
    """Login attempts one client address may make per connection and minute; more get a 429."""


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level written."""
    format: Literal["json", "console"] = "json"
    """`json` for production (one object per line), `console` for people reading a terminal."""


class LmsSettings(Section):
    type: Literal["builtin", "moodle", "scim"] = "builtin"
    """LMS adapter that provisions accounts before the handoff: `builtin` keeps accounts in the bridge's database, `moodle` uses Moodle's web services, `scim` a SCIM 2.0 endpoint (docs/lms.md)."""
    base_url: str = "http://127.0.0.1:8000/lms"
    """Where the LMS lives; a relative `next` path is resolved against it."""
    allowed_hosts: list[str] = []
    """Further hosts an absolute `next` URL may point at (the host of `base_url` is always allowed)."""
    client_id: str = "lms"
    """Id of the OpenID Connect client (in `provider.clients`) that is the LMS: the handoff signs the person in through it."""
    api_url: str | None = None
    """The LMS's API base (Moodle: the site URL, where `webservice/rest/server.php` lives)."""
    api_token: SecretStr | None = None
    """The LMS API token (Moodle: a web-service token with the functions listed in docs/lms.md; SCIM: a bearer token)."""
    api_username: str | None = None
    """SCIM with HTTP Basic instead of a bearer token: the user name."""
    api_password: SecretStr | None = None
    """SCIM with HTTP Basic: the password."""
    timeout: float = Field(default=10.0, gt=0, le=120)
    """Seconds to wait for each LMS API call; transient failures are retried three times in all."""
    moodle_login: Literal["userkey", "oidc"] = "userkey"
    """How people get into Moodle: the `auth_userkey` plugin's one-time login URL, or the bridge's OpenID Provider (an OIDC auth plugin)."""
    moodle_languages: list[str] = ["en"]
    """Language packs installed on the Moodle site (Moodle codes such as `en`, `de`, `pt_br`): Moodle refuses others, so a person's language falls back to its base language or is left out."""
    moodle_student_role_id: int = Field(default=5, ge=1)
    """The role id course enrolments get (5 is Moodle's student)."""
    moodle_auth: str | None = None
    """Authentication method of the accounts the bridge creates in Moodle. Unset: `userkey` with `moodle_login = "userkey"`, `oidc` with `"oidc"` (`oauth2` for Moodle's own OAuth 2 plugin)."""
    moodle_managed_cohorts: list[str] | None = None
    """Cohort ID numbers the bridge reads and manages; it then never sees, so never removes, any other. Unset: every cohort on the site (slower on a site with many). Must include every cohort the rules name."""
    moodle_create_cohorts: bool = True
    """Create a cohort a rule names that Moodle does not have yet (a site cohort); with `false` such a grant is skipped and audited (`lms_target_missing`), and `sso-bridge check` names the cohort."""
    moodle_cache_ttl: float = Field(default=300.0, ge=0, le=86400)
    """Seconds the list of cohorts and each course's id are kept before being asked again; 0 asks at every login."""

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return https_or_loopback(value).rstrip("/")

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str | None) -> str | None:
        return None if value is None else https_or_loopback(value).rstrip("/")

    @field_validator("moodle_auth")
    @classmethod
    def _check_moodle_auth(cls, value: str | None) -> str | None:
        if value is not None and not MOODLE_PLUGIN.fullmatch(value):
            raise ValueError(
                "must be the name of a Moodle authentication plugin, such as userkey or oidc"
            )
        return value

    @field_validator("moodle_managed_cohorts")
    @classmethod
    def _check_managed_cohorts(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if any(not name.strip() for name in value):
            raise ValueError("a cohort ID number cannot be empty")
        if len(value) != len(set(value)):
            raise ValueError("a cohort is listed twice")
        return value

    @model_validator(mode="after")
    def _check_adapter(self) -> LmsSettings:
        if self.type == "moodle" and (self.api_url is None or self.api_token is None):
            raise ValueError("the moodle adapter needs api_url and api_token")
        if self.type == "scim" and (
            self.api_url is None
            or (self.api_token is None and (self.api_username is None or self.api_password is None))
        ):
            raise ValueError(
                "the scim adapter needs api_url and api_token (or api_username and api_password)"
            )
        return self


RuleField = Literal[
    "connection",
    "department",
    "location",
    "job_title",
    "manager",
    "language",
    "employment_status",
    "groups",
    "email_domain",
]


class RuleSettings(Section):
    """One rule: when a person matches, they belong to these groups and courses."""

    name: str = Field(min_length=1, max_length=100)
    """Shown by `sso-bridge rules explain` and in the audit log."""
    when: dict[RuleField, list[str]] = {}
    """Conditions that must all hold: the field equals one of the values (case-insensitive; `*` means any value is present; for `groups`, one of the person's groups is listed). Empty: everyone."""
    hired_within_days: int | None = Field(default=None, ge=0, le=3650)
    """Also require a hire date (identity field `hire_date`) at most this many days ago: onboarding rules."""
    groups: list[str] = []
    """LMS groups or cohorts the rule puts people in."""
    courses: list[str] = []
    """LMS courses the rule enrols people in."""

    @model_validator(mode="after")
    def _grants_something(self) -> RuleSettings:
        if not self.groups and not self.courses:
            raise ValueError(f"rule {self.name!r} grants no group and no course")
        return self


class ClientSettings(Section):
    """An OpenID Connect client of the bridge's provider (the LMS)."""

    client_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")
    """The client id the LMS sends."""
    client_secret: SecretStr | None = None
    """Secret for `client_secret_basic` or `client_secret_post`; unset for a public client (PKCE only)."""
    redirect_uris: list[str] = Field(min_length=1)
    """Exact redirect URIs the client may use; compared byte for byte."""
    initiate_login_uri: str | None = None
    """The LMS's third-party-initiated login URL (OIDC Core 4); the handoff sends people there with `iss` and `target_link_uri`."""
    scopes: list[str] = ["openid", "profile", "email", "employee", "groups"]
    """Scopes the client may ask for."""
    require_pkce: bool = True
    """Refuse authorization requests without PKCE (S256). `false` only for a client with `client_secret` whose LMS cannot send PKCE (Moodle's OIDC plugins): its requests without PKCE must then be OpenID Connect (`openid` scope) with a `nonce`; a challenge it does send is still verified, and `plain` is always refused."""

    @field_validator("redirect_uris")
    @classmethod
    def _check_redirects(cls, value: list[str]) -> list[str]:
        return [https_or_loopback(uri) for uri in value]

    @field_validator("client_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("require_pkce")
    @classmethod
    def _pkce_or_secret(cls, value: bool, info: ValidationInfo) -> bool:
        # RFC 9700 (OAuth 2.0 Security BCP) 2.1.1: a confidential client proves itself at
        # the token endpoint, so a stolen code is useless to anyone without its secret;
        # against a code injected into the client's own login, the OpenID Connect nonce
        # stands in for PKCE, and the provider requires one from such a client
        # (provider.py). PKCE stays the default. A public client has no secret: PKCE is
        # its only proof.
        if "client_secret" not in info.data:
            return value  # the secret itself was invalid: that error is the one to show
        if not value and info.data["client_secret"] is None:
            raise ValueError(
                "may be false only for a confidential client: set client_secret, or keep "
                "require_pkce = true (a public client has nothing but PKCE to prove the code "
                "is its own)"
            )
        return value


class ProviderSettings(Section):
    signing_key_files: list[Path] = []
    """PEM private keys (RSA or EC P-256) that sign ID tokens: the first signs, the others stay in the JWKS so tokens they signed still verify during a rotation."""
    id_token_lifetime: int = Field(default=300, ge=60, le=3600)
    """Seconds an ID token is valid."""
    access_token_lifetime: int = Field(default=300, ge=60, le=3600)
    """Seconds an access token (for userinfo) is valid."""
    code_lifetime: int = Field(default=60, ge=10, le=600)
    """Seconds an authorization code is valid; each is single use."""
    clients: list[ClientSettings] = []
    """The LMSs that sign people in through the bridge."""


class TokenKeySettings(Section):
    """One key a portal signs handoff tokens with."""

    kid: str = Field(pattern=f"^{KID.pattern}$")
    """Key id the token header names in `kid`."""
    alg: TokenAlgorithm
    """The one algorithm this key may be used with; a token naming another is refused."""
    public_key_file: Path | None = None
    """PEM public key (Ed25519, EC P-256 or RSA ≥ 2048 bits) for EdDSA, ES256 or RS256."""
    secret_file: Path | None = None
    """File holding the shared secret for HS256 (at least 32 bytes)."""

    @model_validator(mode="after")
    def _one_source(self) -> TokenKeySettings:
        if self.alg == "HS256":
            if self.secret_file is None or self.public_key_file is not None:
                raise ValueError("an HS256 key needs secret_file and no public_key_file")
        elif self.public_key_file is None or self.secret_file is not None:
            raise ValueError(f"an {self.alg} key needs public_key_file and no secret_file")
        return self


class ConnectionBase(Section):
    display_name: str = ""
    """Name shown to people on the chooser and error pages."""
    attributes: dict[IdentityField, str] = {}
    """Upstream attribute or claim name for each identity field, where it differs from the connector's default."""
    required_attributes: list[IdentityField] = []
    """Identity fields a login must carry; a login without one is refused with a page naming it."""
    active_statuses: list[str] = ["active"]
    """Values of `employment_status` that may sign in; any other value blocks the person (an absent status counts as active)."""
    email_domains: list[str] = []
    """E-mail domains for home-realm discovery on `/login`."""


class TokenConnection(ConnectionBase):
    """A homegrown portal that posts a signed handoff token (docs/token-handoff.md)."""

    type: Literal["token"]
    """Connection kind."""
    issuer: str = Field(min_length=1, max_length=256)
    """The portal's registered id: the token's `iss` must equal it exactly."""
    algorithms: list[TokenAlgorithm] = ["EdDSA", "ES256", "RS256"]
    """Algorithms this connection accepts at all; each key is also pinned to one of them."""
    keys: list[TokenKeySettings] = []
    """Keys from files; several at once let the portal rotate without downtime."""
    jwks: dict[str, Any] | None = None
    """An inline JWKS (`{"keys": [...]}`); each key needs a `kid`."""
    jwks_url: str | None = None
    """The portal's JWKS URL, fetched and cached; an unknown `kid` triggers a refetch (rate-limited)."""
    jwks_cache_seconds: int = Field(default=300, ge=10, le=86400)
    """How long a fetched JWKS is trusted before it is fetched again."""
    jwks_refetch_interval: int = Field(default=30, ge=1, le=3600)
    """Least seconds between two fetches caused by an unknown `kid` or an empty cache (across all instances)."""
    jwks_stale_seconds: int = Field(default=3600, ge=0, le=7 * 86400)
    """How long the last good JWKS may still be used when the URL fails after the cache expired; 0 refuses at once."""
    max_lifetime: int = Field(default=120, ge=10, le=600)
    """Longest accepted `exp` - `iat`, in seconds."""
    leeway: int = Field(default=30, ge=0, le=300)
    """Clock skew tolerated on `iat`, `nbf` and `exp`, in seconds."""
    allow_get: bool = False
    """Also accept the token as a GET query parameter (it then lands in browser history and proxy logs)."""
    portal_url: str | None = None
    """Where `/login` sends people to start from their portal."""
    allowed_origins: list[str] = []
    """Origins (`https://host[:port]`) whose pages may post tokens; a post from any other origin is refused. Empty: the origin of `portal_url`, or any origin when that is unset too."""

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if parts.scheme not in ("https", "http") or not parts.netloc or parts.path:
                raise ValueError(f"{origin!r} is not an origin like https://portal.example.com")
        return value

    @field_validator("jwks_url", "portal_url")
    @classmethod
    def _check_urls(cls, value: str | None) -> str | None:
        return None if value is None else https_or_loopback(value)

    @model_validator(mode="after")
    def _has_keys(self) -> TokenConnection:
        if not (self.keys or self.jwks or self.jwks_url):
            raise ValueError("a token connection needs keys, jwks or jwks_url")
        for key in self.keys:
            if key.alg not in self.algorithms:
                raise ValueError(
                    f"key {key.kid!r} uses {key.alg}, which `algorithms` does not allow"
                )
        return self


SamlNameIdFormat = Literal["persistent", "emailAddress", "unspecified", "transient"]


class SamlConnection(ConnectionBase):
    """An HR portal or identity provider that signs people in with SAML 2.0 (docs/saml.md)."""

    type: Literal["saml"]
    """Connection kind."""
    idp_metadata_url: str | None = None
    """The IdP's metadata URL: fetched at start and refreshed on a schedule; the last good copy is kept under `var_dir` and used while the URL fails."""
    idp_metadata_file: Path | None = None
    """The IdP's metadata as a file (instead of a URL)."""
    idp_entity_id: str | None = None
    """Which entity to use when the metadata describes several IdPs (an aggregate)."""
    idp_metadata_signing_cert_file: Path | None = None
    """PEM certificate the metadata must be signed with; unsigned or wrongly signed metadata is then refused."""
    idp_cert_files: list[Path] = []
    """Extra IdP signing certificates (PEM) trusted besides those in the metadata, e.g. during a rollover."""
    metadata_refresh_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    """How often the metadata URL is fetched again."""
    sp_entity_id: str | None = None
    """This SP's entity id for the connection; default `<base_url>/saml/<id>/metadata`."""
    sp_key_file: Path | None = None
    """PEM private key of this SP: signs AuthnRequests, LogoutRequests and metadata, and decrypts encrypted assertions."""
    sp_cert_file: Path | None = None
    """PEM certificate for `sp_key_file`, published in the SP metadata."""
    sp_next_cert_file: Path | None = None
    """The next SP certificate, published in the metadata ahead of a key rollover (`sso-bridge certs rotate`)."""
    sign_authn_requests: bool = False
    """Sign AuthnRequests (needs `sp_key_file`)."""
    want_response_signed: bool = False
    """Also require the Response itself to be signed (assertions must always be)."""
    want_assertions_encrypted: bool = False
    """Refuse assertions that are not encrypted to this SP (needs `sp_key_file`)."""
    allow_unsolicited: bool = False
    """Accept IdP-initiated logins (a Response without InResponseTo): the Training tab launch of most HR portals. The deep link then comes from RelayState."""
    name_id_format: SamlNameIdFormat = "persistent"
    """NameID format asked for in AuthnRequests."""
    subject_attribute: str | None = None
    """Take the stable subject from this attribute instead of the NameID (required when the IdP only sends transient NameIDs)."""
    clock_skew: int = Field(default=60, ge=0, le=300)
    """Seconds of clock difference tolerated on NotBefore and NotOnOrAfter of the Conditions."""
    max_response_bytes: int = Field(default=256 * 1024, ge=4096, le=4 * 1024 * 1024)
    """Largest decoded SAMLResponse accepted, in bytes."""
    slo: bool = True
    """Single logout: end the IdP session on /logout, and accept the IdP's signed LogoutRequests."""

    @field_validator("idp_metadata_url")
    @classmethod
    def _check_metadata_url(cls, value: str | None) -> str | None:
        return None if value is None else https_or_loopback(value)

    @model_validator(mode="after")
    def _check_sources(self) -> SamlConnection:
        if (self.idp_metadata_url is None) == (self.idp_metadata_file is None):
            raise ValueError(
                "a SAML connection needs exactly one of idp_metadata_url, idp_metadata_file"
            )
        if (self.sp_key_file is None) != (self.sp_cert_file is None):
            raise ValueError("sp_key_file and sp_cert_file go together")
        needs_key = self.sign_authn_requests or self.want_assertions_encrypted
        if needs_key and self.sp_key_file is None:
            raise ValueError("sign_authn_requests and want_assertions_encrypted need sp_key_file")
        if self.name_id_format == "transient" and self.subject_attribute is None:
            raise ValueError(
                "a transient NameID changes at every login, so it cannot key an account: "
                "set subject_attribute to a stable attribute"
            )
        return self


ClientAuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]


class OAuthClientBase(ConnectionBase):
    """What OpenID Connect and plain OAuth2 connections share: the bridge as a client."""

    client_id: str = Field(min_length=1, max_length=256)
    """The client id the provider gave the bridge."""
    client_secret: SecretStr | None = None
    """The client secret, for `client_secret_basic` and `client_secret_post`."""
    client_auth_method: ClientAuthMethod = "client_secret_basic"
    """How the bridge authenticates at the token endpoint."""
    client_key_file: Path | None = None
    """PEM private key (RSA or EC P-256) for `private_key_jwt`; its public JWK is what the provider registers."""
    scopes: list[str] = []
    """Scopes to request; default `openid profile email` for OIDC, none for OAuth2."""
    authorization_endpoint: str | None = None
    """The provider's authorization endpoint (OIDC: taken from discovery when unset)."""
    token_endpoint: str | None = None
    """The provider's token endpoint (OIDC: taken from discovery when unset)."""
    allowed_claim_values: dict[str, list[str]] = {}
    """Claims that must hold one of the listed values, e.g. Entra ID's `tid` (the tenant) or Google's `hd` (the Workspace domain)."""
    timeout: float = Field(default=10.0, gt=0, le=60)
    """Seconds to wait for the provider's token, userinfo, JWKS and discovery endpoints."""

    @field_validator("authorization_endpoint", "token_endpoint")
    @classmethod
    def _check_endpoints(cls, value: str | None) -> str | None:
        return None if value is None else https_or_loopback(value)

    @model_validator(mode="after")
    def _check_client_auth(self) -> OAuthClientBase:
        if self.client_auth_method == "private_key_jwt":
            if self.client_key_file is None:
                raise ValueError("private_key_jwt needs client_key_file")
        elif self.client_secret is None:
            raise ValueError(f"{self.client_auth_method} needs client_secret")
        return self


MUTABLE_CLAIMS = frozenset({"email", "upn", "preferred_username", "unique_name", "name"})


class OidcConnection(OAuthClientBase):
    """An OpenID Connect provider: Entra ID, Okta, Google, Keycloak, … (docs/oidc.md)."""

    type: Literal["oidc"]
    """Connection kind."""
    issuer: str
    """The provider's issuer: ID tokens' `iss` and the discovery document's `issuer` must equal it exactly."""
    discovery_url: str | None = None
    """Where the discovery document is; default `<issuer>/.well-known/openid-configuration`. Unused when every endpoint is given by hand."""
    jwks_uri: str | None = None
    """The provider's JWKS (taken from discovery when unset)."""
    userinfo_endpoint: str | None = None
    """The provider's userinfo endpoint (taken from discovery when unset)."""
    end_session_endpoint: str | None = None
    """Where `/logout` sends people to end the provider's session too (taken from discovery when unset)."""
    use_userinfo: bool = True
    """Also fetch userinfo and merge its claims (only when its `sub` equals the ID token's)."""
    id_token_algorithms: list[
        Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
    ] = ["RS256", "ES256"]
    """Algorithms accepted on ID tokens; pinned here, never taken from the token."""
    subject_claim: str = "sub"
    """The claim that identifies the person stably (Entra ID: `oid`, stable across applications)."""
    leeway: int = Field(default=60, ge=0, le=300)
    """Clock skew tolerated on `exp` and `iat`, in seconds."""
    max_token_age: int = Field(default=600, ge=60, le=86400)
    """Oldest `iat` accepted on an ID token, in seconds."""
    jwks_cache_seconds: int = Field(default=3600, ge=60, le=86400)
    """How long the provider's JWKS and discovery document are trusted before they are fetched again."""
    jwks_refetch_interval: int = Field(default=60, ge=1, le=3600)
    """Least seconds between two JWKS fetches caused by an unknown `kid` (across all instances)."""

    @field_validator("subject_claim")
    @classmethod
    def _check_subject(cls, value: str) -> str:
        # An e-mail address or UPN can be reassigned, or (at some providers) set by the
        # user: as an account key it lets one person take over another's account.
        if value in MUTABLE_CLAIMS:
            raise ValueError(f"{value!r} can change or be reassigned; use sub or oid")
        return value

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: list[str]) -> list[str]:
        if value and "openid" not in value:
            raise ValueError("an OpenID Connect login needs the openid scope")
        return value

    @field_validator(
        "issuer", "discovery_url", "jwks_uri", "userinfo_endpoint", "end_session_endpoint"
    )
    @classmethod
    def _check_urls(cls, value: str | None) -> str | None:
        return None if value is None else https_or_loopback(value)


class OAuth2Connection(OAuthClientBase):
    """A portal that speaks only OAuth2: a profile URL gives the identity (docs/oidc.md)."""

    type: Literal["oauth2"]
    """Connection kind."""
    authorization_endpoint: str
    """The provider's authorization endpoint."""
    token_endpoint: str
    """The provider's token endpoint."""
    profile_url: str
    """URL that returns the signed-in person's profile as JSON, with the access token."""
    subject_field: str = "id"
    """Field of the profile JSON holding a stable id (not the e-mail); dotted for nested objects."""
    use_pkce: bool = True
    """Send PKCE (S256); turn off only for a provider that rejects it."""

    @field_validator("profile_url")
    @classmethod
    def _check_profile(cls, value: str) -> str:
        return https_or_loopback(value)


Connection = Annotated[
    TokenConnection | SamlConnection | OidcConnection | OAuth2Connection,
    Field(discriminator="type"),
]


class Settings(BaseSettings):
    """The whole configuration of one bridge deployment."""

    model_config = SettingsConfigDict(
        env_prefix="SSO_BRIDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        use_attribute_docstrings=True,
        frozen=True,
    )

    base_url: str
    """The bridge's public URL (scheme, host, optional path). Every absolute URL it sends is built from it, never from the Host header."""
    database: DatabaseSettings = DatabaseSettings()
    """The durable store."""
    store: StoreSettings = StoreSettings()
    """The ephemeral store shared between instances."""
    session: SessionSettings = SessionSettings()
    """The bridge's own browser session."""
    limits: LimitsSettings = LimitsSettings()
    """Input size limits."""
    log: LogSettings = LogSettings()
    """Logging."""
    lms: LmsSettings = LmsSettings()
    """The learning platform people are sent into."""
    provider: ProviderSettings = ProviderSettings()
    """The bridge as OpenID Provider toward the LMS."""
    rules: list[RuleSettings] = []
    """Group and course rules, evaluated on every login (docs/lms.md)."""
    connections: dict[str, Connection] = {}
    """Upstream connections, by slug (the `<id>` in `/token/<id>`, `/saml/<id>/…`)."""
    trusted_proxies: int = Field(default=0, ge=0, le=5)
    """How many reverse proxies in front of the bridge append to `X-Forwarded-For`; their entries give the client address used for rate limits and audit. 0 trusts none."""
    outbound_proxy: str | None = None
    """Proxy URL (`http://proxy.internal:3128`) for the bridge's own requests: IdP metadata, portal JWKS and the LMS API (Moodle, SCIM). Proxy settings in the environment are not used."""
    var_dir: Path = Path("var")
    """Directory for files the bridge writes (SQLite database, cached metadata)."""

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return https_or_loopback(value).rstrip("/")

    @field_validator("connections")
    @classmethod
    def _check_slugs(cls, value: dict[str, Any]) -> dict[str, Any]:
        for slug in value:
            if not SLUG.fullmatch(slug):
                raise ValueError(f"connection id {slug!r} must be a lowercase slug (a-z, 0-9, -)")
        return value

    @model_validator(mode="after")
    def _check_saml_sizes(self) -> Settings:
        for cid, connection in self.connections.items():
            # The SAMLResponse travels base64-encoded (4/3) in a form body: a response the
            # connection accepts must fit in a request the web layer accepts.
            if (
                connection.type == "saml"
                and connection.max_response_bytes * 4 // 3 + 1024 > self.limits.max_request_bytes
            ):
                raise ValueError(
                    f"connections.{cid}.max_response_bytes needs limits.max_request_bytes of at "
                    f"least {connection.max_response_bytes * 4 // 3 + 1024}"
                )
        return self

    @model_validator(mode="after")
    def _check_lms_client(self) -> Settings:
        ids = [client.client_id for client in self.provider.clients]
        if len(ids) != len(set(ids)):
            raise ValueError("provider.clients: client_id values must be unique")
        if self.provider.clients and self.lms.client_id not in ids:
            raise ValueError(f"lms.client_id {self.lms.client_id!r} is not in provider.clients")
        if self.lms.type == "moodle" and self.lms.moodle_login == "oidc" and not ids:
            # Nobody could sign in to Moodle: refused at start, not found at the first login.
            raise ValueError(
                f'lms.moodle_login = "oidc" needs a [[provider.clients]] entry with client_id '
                f"= {self.lms.client_id!r} (lms.client_id): Moodle signs people in through it"
            )
        return self

    @model_validator(mode="after")
    def _rules_within_managed_cohorts(self) -> Settings:
        managed = self.lms.moodle_managed_cohorts
        if self.lms.type != "moodle" or managed is None:
            return self
        for index, rule in enumerate(self.rules):
            # A cohort outside the list is never read back: it would be added at every
            # login and never removed.
            outside = [group for group in rule.groups if group not in managed]
            if outside:
                raise ValueError(
                    f"rules.{index}.groups: {', '.join(outside)} not in lms.moodle_managed_cohorts"
                )
        return self

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def session_cookie(self) -> str:
        """The session cookie's name; on https with the `__Host-` prefix, which makes
        browsers refuse it unless it is Secure, host-only and for path `/` (so a sibling
        subdomain cannot plant or overwrite it)."""
        name = self.session.cookie_name
        return f"__Host-{name}" if self.secure_cookies else name

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        secrets_dir = _secrets_dir.get()
        if secrets_dir is not None:
            sources.append(
                NestedSecretsSettingsSource(
                    file_secret_settings,
                    secrets_dir=secrets_dir,
                    secrets_dir_missing="error",
                    secrets_prefix="",
                    secrets_nested_delimiter="__",
                )
            )
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


CONNECTION_KINDS = ("token", "saml", "oidc", "oauth2")

_config_file: ContextVar[Path | None] = ContextVar("config_file", default=None)
_secrets_dir: ContextVar[Path | None] = ContextVar("secrets_dir", default=None)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read and validate the configuration; raise ConfigError naming every bad key.

    Without ``config_file``, the file comes from ``SSO_BRIDGE_CONFIG``. This is
    the one place that reads the process environment.
    """
    path = config_file or os.environ.get(CONFIG_ENV)
    secrets = os.environ.get(SECRETS_DIR_ENV)
    problems: list[str] = []
    if path is not None and not Path(path).is_file():
        raise ConfigError([f"{CONFIG_ENV}: no such file: {path}"])
    if secrets is not None and not Path(secrets).is_dir():
        raise ConfigError([f"{SECRETS_DIR_ENV}: no such directory: {secrets}"])
    file_token = _config_file.set(Path(path) if path else None)
    secrets_token = _secrets_dir.set(Path(secrets) if secrets else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise ConfigError(problems) from None
    except ValueError as exc:  # a TOML syntax error names the line
        raise ConfigError([f"{path}: {exc}"]) from None
    finally:
        _config_file.reset(file_token)
        _secrets_dir.reset(secrets_token)


def _describe(error: Any) -> str:
    """One line per problem: the dotted key, then pydantic's message without the input value.

    The input is left out on purpose: it may be a secret.
    """
    loc = list(error["loc"])
    # A connection's errors carry the union's tag ("token", "saml") after its id: drop it.
    if len(loc) > 2 and loc[0] == "connections" and loc[2] in CONNECTION_KINDS:
        del loc[2]
    key = ".".join(str(part) for part in loc) or "(root)"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: {message}"
