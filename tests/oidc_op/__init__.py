"""A real OpenID Provider for the tests: panva's oidc-provider (npm) under Node.js.

`OidcProvider()` makes sure tests/oidc_op/node/node_modules is installed (`npm ci` from the
committed package-lock.json, when it is missing or older than the lock file), writes a JSON
config into a temporary directory, starts `node tests/oidc_op/node/provider.mjs` on a free
127.0.0.1 port and waits until the discovery document answers.

- The issuer is `http://127.0.0.1:PORT`; discovery, authorization code with PKCE (S256,
  required for every client), userinfo, RP-initiated logout, and the `iss` parameter in
  authorization responses (RFC 9207) are on.
- `add_client(...)` registers or replaces a client (client_secret_basic, client_secret_post,
  private_key_jwt or none); `set_user(...)` adds or changes a user and its claims;
  `rotate_key(alg)` signs with a new key from now on and keeps publishing the old one.
  Changes take effect at once, without a restart: the provider is rebuilt from the new
  config inside the running process, and its sessions, grants and codes survive.
- `login(http, authorize_url, username)` drives the provider's login form with a
  `requests.Session` and returns the redirect to the client's redirect_uri (with code,
  state and iss), never following it. `deny(...)` cancels instead (error=access_denied).
- `logout_url(...)` builds an RP-initiated logout URL; `logout(http, url)` confirms it.

Which claims a scope releases is `SCOPE_CLAIMS` (as the bridge's own provider does, plus
email_verified and preferred_username). With access tokens issued, oidc-provider puts the
scopes' claims into userinfo only; `OidcProvider(conform_id_token_claims=False)` puts them
into the ID token too, as many commercial providers do.

Users (all with the password `PASSWORD`) are in `USERS`. The session fixture `oidc_op`
(import `oidc_op_fixture`) fails, never skips, when Node.js or npm is missing.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import pytest
import requests
from joserfc.jwk import ECKey, KeyParameters, RSAKey

from tests.services import (
    HOST,
    ChildServer,
    ServiceError,
    stop_process_group,
)

INSTALL_HINT = "run `make test` or scripts/install-system-deps.sh"
NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "provider.mjs"
LOCK_FILE = NODE_DIR / "package-lock.json"
NODE_MODULES = NODE_DIR / "node_modules"
# oidc-provider 9 calls URL.parse (Node.js 20.18 and later) and crypto.hash (20.12).
MIN_NODE = (20, 18)
HTTP_TIMEOUT = 15.0
NPM_TIMEOUT = 600.0

PASSWORD = "password"  # every test user's password (tests only)

# Which claims each scope releases; `sub` always comes with openid.
SCOPE_CLAIMS: dict[str, list[str]] = {
    "profile": ["name", "given_name", "family_name", "preferred_username", "locale"],
    "email": ["email", "email_verified"],
    "employee": [
        "employee_id",
        "department",
        "location",
        "manager",
        "job_title",
        "employment_status",
    ],
    "groups": ["groups"],
}

# username -> claims, in OpenID Connect's names (and the bridge's own for the rest).
USERS: dict[str, dict[str, Any]] = {
    "ada": {
        "sub": "00u-ada-1001",
        "email": "ada@acme.example",
        "email_verified": True,
        "given_name": "Ada",
        "family_name": "Lovelace",
        "name": "Ada Lovelace",
        "preferred_username": "ada",
        "locale": "en-GB",
        "employee_id": "E1001",
        "department": "Engineering",
        "location": "London",
        "manager": "E0001",
        "job_title": "Analyst",
        "employment_status": "active",
        "groups": ["engineering", "staff"],
    },
    "zoe": {
        "sub": "00u-zoe-1002",
        "email": "zoe@acme.example",
        "email_verified": True,
        "given_name": "Zoë",
        "family_name": "Ørsted-Ünal",
        "name": "Zoë Ørsted-Ünal 佐藤",
        "preferred_username": "zoe",
        "locale": "da-DK",
        "employee_id": "E1002",
        "department": "Forschung & Entwicklung",
        "location": "København",
        "job_title": "Forscherin",
        "employment_status": "active",
        "groups": ["research", "staff"],
    },
    "nomail": {
        "sub": "00u-nomail-1003",
        "given_name": "Noah",
        "family_name": "Mailless",
        "name": "Noah Mailless",
        "preferred_username": "nomail",
        "locale": "en-GB",
        "employee_id": "E1003",
        "department": "Warehouse",
        "location": "Leeds",
        "employment_status": "active",
        "groups": ["staff"],
    },
    "leaver": {
        "sub": "00u-leaver-1004",
        "email": "leaver@acme.example",
        "email_verified": True,
        "given_name": "Lee",
        "family_name": "Ver",
        "name": "Lee Ver",
        "preferred_username": "leaver",
        "locale": "fr-FR",
        "employee_id": "E1004",
        "department": "Sales",
        "location": "Paris",
        "employment_status": "terminated",
        "groups": ["sales", "staff"],
    },
}

SECRET_METHODS = ("client_secret_basic", "client_secret_post", "client_secret_jwt")
AUTH_METHODS = (*SECRET_METHODS, "private_key_jwt", "none")


class MissingNode(ServiceError):
    """Node.js or npm is not installed, or the installed Node.js is too old."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: {INSTALL_HINT}")


class IdpError(AssertionError):
    """The provider did not do what the test expected (wrong password, error page, ...)."""


@dataclass(frozen=True)
class OidcClient:
    """A client as registered at the provider."""

    client_id: str
    client_secret: str | None
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: str
    post_logout_redirect_uris: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def redirect_uri(self) -> str:
        """The first redirect URI."""
        return self.redirect_uris[0]


# --- Node.js and npm ---------------------------------------------------------------------


def find_node() -> str:
    """The node binary (SSO_BRIDGE_TEST_NODE overrides PATH), checked to be new enough."""
    node = os.environ.get("SSO_BRIDGE_TEST_NODE") or shutil.which("node")
    if node is None:
        raise MissingNode("node (Node.js 20.18 or later) is not installed")
    try:
        version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise MissingNode(f"{node} does not run ({exc})") from exc
    found = re.match(r"v(\d+)\.(\d+)", version)
    if found is None or (int(found[1]), int(found[2])) < MIN_NODE:
        raise MissingNode(
            f"{node} is Node.js {version}; oidc-provider needs {MIN_NODE[0]}.{MIN_NODE[1]} or later"
        )
    return node


def find_npm() -> str:
    npm = os.environ.get("SSO_BRIDGE_TEST_NPM") or shutil.which("npm")
    if npm is None:
        raise MissingNode("npm is not installed")
    return npm


def _installed() -> bool:
    # npm ci writes node_modules/.package-lock.json last; it is as new as the install.
    hidden = NODE_MODULES / ".package-lock.json"
    if not (hidden.is_file() and (NODE_MODULES / "oidc-provider" / "package.json").is_file()):
        return False
    return hidden.stat().st_mtime >= LOCK_FILE.stat().st_mtime


def ensure_node_modules(node: str | None = None) -> float:
    """Run `npm ci` in tests/oidc_op/node when node_modules is missing or stale.

    Returns the seconds spent installing (0.0 when nothing was to do). A lock file keeps
    two test sessions from installing at once.
    """
    if _installed():
        return 0.0
    npm = find_npm()
    env = dict(os.environ)
    if node is not None:
        # npm's scripts and npm itself (a node script) use the node we checked.
        env["PATH"] = f"{Path(node).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("npm_config_update_notifier", "false")
    began = time.monotonic()
    with (NODE_DIR / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed():
            return time.monotonic() - began
        try:
            result = subprocess.run(
                [npm, "ci", "--omit=dev", "--no-audit", "--no-fund"],
                cwd=NODE_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=NPM_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceError(f"npm ci in {NODE_DIR} failed: {exc}") from exc
        if result.returncode != 0:
            raise ServiceError(
                f"npm ci in {NODE_DIR} failed with status {result.returncode}:\n"
                f"{result.stdout[-4000:]}"
            )
    return time.monotonic() - began


# --- keys ----------------------------------------------------------------------------------


def make_signing_key(alg: str, kid: str) -> dict[str, Any]:
    """A new private JWK for RS256 (RSA-2048) or ES256 (P-256)."""
    parameters: KeyParameters = {"use": "sig", "alg": alg, "kid": kid}
    if alg == "RS256":
        return RSAKey.generate_key(2048, parameters=parameters, private=True).as_dict(private=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=parameters, private=True).as_dict(
            private=True
        )
    raise ValueError(f"unsupported signing algorithm {alg!r} (RS256 or ES256)")


def public_jwk(jwk: Mapping[str, Any]) -> dict[str, Any]:
    private = {"d", "p", "q", "dp", "dq", "qi", "oth"}
    return {name: value for name, value in jwk.items() if name not in private}


# --- HTML forms ------------------------------------------------------------------------------


@dataclass
class _Form:
    action: str
    method: str
    ident: str
    fields: dict[str, str] = field(default_factory=dict)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self._form: _Form | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._form = _Form(
                attr.get("action", ""), attr.get("method", "get").lower(), attr.get("id", "")
            )
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None:
            name = attr.get("name")
            if name and attr.get("type", "text").lower() not in ("submit", "button"):
                self._form.fields[name] = attr.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None

    def handle_data(self, data: str) -> None:
        if data.strip():
            self._text.append(data.strip())

    @property
    def text(self) -> str:
        return " ".join(self._text)

    def form(self, ident: str) -> _Form | None:
        return next((form for form in self.forms if form.ident == ident), None)


def _parse(page: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(page)
    parser.close()
    return parser


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# --- the provider --------------------------------------------------------------------------------


class OidcProvider(ChildServer):
    """oidc-provider as an OpenID Provider on a free 127.0.0.1 port; creating one starts it."""

    name = "the OpenID Provider (node provider.mjs)"
    port_taken = "EADDRINUSE"

    def __init__(
        self,
        *,
        clients: Iterable[Mapping[str, Any]] = (),
        users: Mapping[str, Mapping[str, Any]] | None = None,
        scope_claims: Mapping[str, Sequence[str]] | None = None,
        conform_id_token_claims: bool = True,
        ttl: Mapping[str, int] | None = None,
    ) -> None:
        """Start the provider.

        `clients` are keyword arguments for `add_client` (one mapping each); `users` maps
        usernames to claims (default `USERS`), all with the password `PASSWORD`.
        """
        self.node = find_node()
        self.install_seconds = ensure_node_modules(self.node)
        self.dir = Path(tempfile.mkdtemp(prefix="sso-bridge-oidc-op-")).resolve()
        self.config_path = self.dir / "config.json"
        self.log_path = self.dir / "provider.log"
        self.control_token = secrets.token_urlsafe(32)
        self.cookie_keys = [secrets.token_urlsafe(32)]
        self.conform_id_token_claims = conform_id_token_claims
        self.ttl = dict(ttl or {})
        self.scope_claims: dict[str, list[str]] = {
            scope: list(names) for scope, names in (scope_claims or SCOPE_CLAIMS).items()
        }
        self._users: dict[str, dict[str, Any]] = {
            name: {"password": PASSWORD, "claims": copy.deepcopy(dict(claims))}
            for name, claims in (USERS if users is None else users).items()
        }
        self._clients: dict[str, OidcClient] = {}
        self._key_count = 0
        self._keys: list[dict[str, Any]] = [
            self._new_key("RS256"),
            self._new_key("ES256"),
        ]
        self._key = f"oidc-op:{self.dir}"
        self._begin()
        try:
            for options in clients:
                client = self._client(**options)
                self._clients[client.client_id] = client
            self._start()
        except BaseException:
            self.stop()
            raise

    def __repr__(self) -> str:
        return f"<OidcProvider {self.issuer} running={self.running}>"

    # --- addresses ---

    @property
    def issuer(self) -> str:
        """`http://127.0.0.1:PORT`, without a trailing slash."""
        return f"http://{HOST}:{self.port}"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/auth"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def userinfo_endpoint(self) -> str:
        return f"{self.issuer}/me"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def end_session_endpoint(self) -> str:
        return f"{self.issuer}/session/end"

    def metadata(self) -> dict[str, Any]:
        """The discovery document, fetched now."""
        return self._get_json(self.discovery_url)

    def jwks(self) -> dict[str, Any]:
        """The published JWKS, fetched now."""
        return self._get_json(self.jwks_uri)

    # --- clients, users, keys ---

    @property
    def clients(self) -> dict[str, OidcClient]:
        return dict(self._clients)

    def add_client(
        self,
        client_id: str | None = None,
        *,
        redirect_uris: Sequence[str],
        client_secret: str | None = None,
        token_endpoint_auth_method: str = "client_secret_basic",
        post_logout_redirect_uris: Sequence[str] = (),
        jwks: Mapping[str, Any] | None = None,
        id_token_signed_response_alg: str = "RS256",
        **metadata: Any,
    ) -> OidcClient:
        """Register a client, or replace the one with the same client_id; in force at once.

        A secret is made up for the client_secret_* methods unless one is given. For
        private_key_jwt, `jwks` is the client's public JWKS. Any other client metadata
        that oidc-provider knows (grant_types, scope, application_type, ...) may be given
        as keyword arguments. Raises ServiceError when the provider refuses the metadata.
        """
        client = self._client(
            client_id,
            redirect_uris=redirect_uris,
            client_secret=client_secret,
            token_endpoint_auth_method=token_endpoint_auth_method,
            post_logout_redirect_uris=post_logout_redirect_uris,
            jwks=jwks,
            id_token_signed_response_alg=id_token_signed_response_alg,
            **metadata,
        )
        clients = {**self._clients, client.client_id: client}
        self._reconfigure(clients=[c.metadata for c in clients.values()])
        self._clients = clients
        return client

    def remove_client(self, client_id: str) -> None:
        clients = {key: c for key, c in self._clients.items() if key != client_id}
        self._reconfigure(clients=[c.metadata for c in clients.values()])
        self._clients = clients

    def set_user(
        self, username: str, claims: Mapping[str, Any], *, password: str = PASSWORD
    ) -> None:
        """Add a user or replace its claims and password; `sub` defaults to the username.

        Tokens issued before keep their claims; userinfo answers with the new ones.
        """
        users = {
            **self._users,
            username: {"password": password, "claims": copy.deepcopy(dict(claims))},
        }
        self._reconfigure(users=users)
        self._users = users

    def remove_user(self, username: str) -> None:
        users = {name: user for name, user in self._users.items() if name != username}
        self._reconfigure(users=users)
        self._users = users

    def user_claims(self, username: str) -> dict[str, Any]:
        """The claims configured for `username` (a copy)."""
        return copy.deepcopy(self._users[username]["claims"])

    def signing_kid(self, alg: str = "RS256") -> str:
        """The kid of the key that signs `alg` tokens now."""
        return next(str(key["kid"]) for key in self._keys if key["alg"] == alg)

    @property
    def published_kids(self) -> list[str]:
        return [str(key["kid"]) for key in self._keys]

    def rotate_key(self, alg: str = "RS256") -> str:
        """Sign `alg` tokens with a new key from now on; the old keys stay published.

        Returns the new key's kid.
        """
        key = self._new_key(alg)
        keys = [key, *self._keys]
        self._reconfigure(jwks={"keys": keys})
        self._keys = keys
        return str(key["kid"])

    def drop_old_keys(self) -> None:
        """Publish only the keys that sign now (one per algorithm)."""
        seen: set[str] = set()
        keys = []
        for key in self._keys:
            if key["alg"] not in seen:
                seen.add(key["alg"])
                keys.append(key)
        self._reconfigure(jwks={"keys": keys})
        self._keys = keys

    # --- driving the provider with a requests.Session ---

    def login(
        self,
        http: requests.Session,
        authorize_url: str,
        username: str,
        password: str = PASSWORD,
    ) -> str:
        """Log `username` in and consent; returns the redirect to the client, not followed.

        That URL is the client's redirect_uri with code, state and iss (or error, when the
        provider refuses the request after the login). If `http` already has a session at
        the provider, no password is asked. Raises IdpError on a refused password or an
        error page.
        """
        return self._drive(http, authorize_url, username=username, password=password)

    def deny(self, http: requests.Session, authorize_url: str) -> str:
        """Cancel at the login form; returns the redirect with error=access_denied."""
        return self._drive(http, authorize_url, username=None, password=None)

    def logout_url(
        self,
        *,
        id_token_hint: str | None = None,
        post_logout_redirect_uri: str | None = None,
        state: str | None = None,
        client_id: str | None = None,
        logout_hint: str | None = None,
        ui_locales: str | None = None,
    ) -> str:
        """An RP-initiated logout URL (OpenID Connect RP-Initiated Logout 1.0)."""
        params = {
            "id_token_hint": id_token_hint,
            "post_logout_redirect_uri": post_logout_redirect_uri,
            "state": state,
            "client_id": client_id,
            "logout_hint": logout_hint,
            "ui_locales": ui_locales,
        }
        query = urlencode({key: value for key, value in params.items() if value is not None})
        return f"{self.end_session_endpoint}?{query}" if query else self.end_session_endpoint

    def logout(self, http: requests.Session, url: str, *, confirm: bool = True) -> str:
        """Open a logout URL and answer the provider's question; returns where it ends.

        That is the client's post_logout_redirect_uri (with state), not followed, or the
        provider's own "signed out" page when there is none.
        """
        response = self._request(http, "GET", url)
        for _ in range(20):
            if response.is_redirect:
                target = urljoin(response.url, response.headers["Location"])
                if not self._at_provider(target):
                    return target
                response = self._request(http, "GET", target)
                continue
            self._check_page(response)
            parsed = _parse(response.text)
            form = parsed.form("op.logoutForm")
            if form is None:
                return response.url
            fields = dict(form.fields)
            if confirm:
                fields["logout"] = "yes"
            response = self._request(http, "POST", urljoin(response.url, form.action), data=fields)
        raise IdpError(f"too many redirects from {url}")

    # --- life cycle ---

    def restart(self) -> None:
        """Stop and start again on the same port: sessions, grants and tokens are lost."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process_group(proc)
        self._write_config()
        self._spawn()

    # --- internals ---

    def _new_key(self, alg: str) -> dict[str, Any]:
        self._key_count += 1
        return make_signing_key(alg, f"{alg.lower()}-{self._key_count}-{secrets.token_hex(4)}")

    @staticmethod
    def _client(
        client_id: str | None = None,
        *,
        redirect_uris: Sequence[str],
        client_secret: str | None = None,
        token_endpoint_auth_method: str = "client_secret_basic",
        post_logout_redirect_uris: Sequence[str] = (),
        jwks: Mapping[str, Any] | None = None,
        id_token_signed_response_alg: str = "RS256",
        **metadata: Any,
    ) -> OidcClient:
        if token_endpoint_auth_method not in AUTH_METHODS:
            raise ValueError(f"unknown token_endpoint_auth_method {token_endpoint_auth_method!r}")
        if isinstance(redirect_uris, str) or not redirect_uris:
            raise ValueError("redirect_uris must be a non-empty list")
        client_id = client_id or f"client-{secrets.token_hex(6)}"
        if token_endpoint_auth_method in SECRET_METHODS:
            client_secret = client_secret or secrets.token_urlsafe(32)
        elif client_secret is not None:
            raise ValueError(f"{token_endpoint_auth_method} clients have no client_secret")
        if token_endpoint_auth_method == "private_key_jwt" and jwks is None:
            raise ValueError("a private_key_jwt client needs its public `jwks`")
        document: dict[str, Any] = {
            "client_id": client_id,
            "redirect_uris": list(redirect_uris),
            "token_endpoint_auth_method": token_endpoint_auth_method,
            "id_token_signed_response_alg": id_token_signed_response_alg,
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
        }
        if client_secret is not None:
            document["client_secret"] = client_secret
        if post_logout_redirect_uris:
            document["post_logout_redirect_uris"] = list(post_logout_redirect_uris)
        if jwks is not None:
            document["jwks"] = {"keys": [public_jwk(key) for key in jwks["keys"]]}
        document.update(metadata)
        return OidcClient(
            client_id=client_id,
            client_secret=client_secret,
            redirect_uris=tuple(redirect_uris),
            token_endpoint_auth_method=token_endpoint_auth_method,
            post_logout_redirect_uris=tuple(post_logout_redirect_uris),
            metadata=document,
        )

    def _config(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "host": HOST,
            "port": self.port,
            "control_token": self.control_token,
            "cookie_keys": self.cookie_keys,
            "jwks": {"keys": self._keys},
            "clients": [client.metadata for client in self._clients.values()],
            "users": self._users,
            "scope_claims": self.scope_claims,
            "conform_id_token_claims": self.conform_id_token_claims,
            "ttl": self.ttl,
        }

    def _write_config(self) -> None:
        tmp = self.config_path.with_name(".config.json.tmp")
        tmp.write_text(json.dumps(self._config(), ensure_ascii=False), encoding="utf-8")
        tmp.chmod(0o600)
        os.replace(tmp, self.config_path)

    def _reconfigure(self, **change: Any) -> None:
        """Send a change to the running provider; on refusal nothing changes."""
        try:
            response = requests.put(
                f"{self.issuer}/__test/config",
                json=change,
                headers={"Authorization": f"Bearer {self.control_token}"},
                timeout=HTTP_TIMEOUT,
            )
        except requests.RequestException as exc:
            raise ServiceError(
                f"the OpenID Provider does not answer ({exc}); its log:\n{self.log_tail()}"
            ) from exc
        if response.status_code != 200:
            raise ServiceError(
                f"the OpenID Provider refused the change ({response.status_code}): "
                f"{response.text.strip()}"
            )

    def _command(self) -> tuple[list[str], dict[str, str]]:
        return [self.node, str(SCRIPT), str(self.config_path)], {**os.environ, "NODE_ENV": "test"}

    def _not_ready(self) -> str | None:
        try:
            response = requests.get(self.discovery_url, timeout=2)
            if response.status_code == 200 and response.json().get("issuer") == self.issuer:
                return None
            return f"HTTP {response.status_code}: {response.text[:500]}"
        except (requests.RequestException, ValueError) as exc:
            return str(exc)

    def _get_json(self, url: str) -> dict[str, Any]:
        response = requests.get(url, timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def _at_provider(self, url: str) -> bool:
        if not url.startswith(self.issuer + "/"):
            return False
        # A client's redirect URI may live on the provider's origin in odd tests.
        target = _without_query(url)
        return not any(target in client.redirect_uris for client in self._clients.values())

    def _request(
        self, http: requests.Session, method: str, url: str, **kwargs: Any
    ) -> requests.Response:
        return http.request(method, url, allow_redirects=False, timeout=HTTP_TIMEOUT, **kwargs)

    def _drive(
        self,
        http: requests.Session,
        url: str,
        *,
        username: str | None,
        password: str | None,
    ) -> str:
        response = self._request(http, "GET", url)
        submitted = False
        for _ in range(30):
            if response.is_redirect:
                target = urljoin(response.url, response.headers["Location"])
                if not self._at_provider(target):
                    return target
                response = self._request(http, "GET", target)
                continue
            parsed = _parse(response.text)
            form = parsed.form("op-login")
            if form is None or response.status_code not in (200, 401):
                self._check_page(response)
                raise IdpError(
                    f"the provider stopped at {response.url} (HTTP {response.status_code}): "
                    f"{parsed.text[:1500]}"
                )
            if response.status_code == 401:
                raise IdpError(f"the provider refused the password of {username!r}")
            if submitted:
                raise IdpError(f"the provider asked for a login again at {response.url}")
            submitted = True
            if username is None:
                abort = parsed.form("op-abort")
                assert abort is not None
                response = self._request(http, "POST", urljoin(response.url, abort.action))
                continue
            fields = {**form.fields, "username": username, "password": password or ""}
            response = self._request(http, "POST", urljoin(response.url, form.action), data=fields)
        raise IdpError(f"too many redirects from {url}")

    def _check_page(self, response: requests.Response) -> None:
        if response.status_code >= 400 or 'id="op-error"' in response.text:
            raise IdpError(
                f"the provider answered {response.request.method} {response.url} with HTTP "
                f"{response.status_code}: {_parse(response.text).text[:2000]}\n"
                f"its log:\n{self.log_tail()}"
            )


# --- pytest fixture ------------------------------------------------------------------------------


def start_or_fail(**options: Any) -> OidcProvider:
    try:
        return OidcProvider(**options)
    except MissingNode as exc:
        missing = str(exc)
    # Fail, never skip: a skipped OpenID Connect test would hide a missing check.
    pytest.fail(missing, pytrace=False)


@pytest.fixture(scope="session", name="oidc_op")
def oidc_op_fixture() -> Iterator[OidcProvider]:
    """`oidc_op`: a real OpenID Provider for the whole session; tests add their clients.

    Import `oidc_op_fixture` into a conftest.py (or a test module) to make it available.
    """
    provider = start_or_fail()
    try:
        yield provider
    finally:
        provider.stop()
