"""A real SAML 2.0 IdP for the tests: SimpleSAMLphp 1.19 (Debian's package) under `php -S`.

`SimpleSamlIdp()` renders a private configuration from tests/saml_idp/templates/ into a
temporary directory, makes an RSA-2048 signing key and self-signed certificate, starts
PHP's built-in web server on a free 127.0.0.1 port and waits until the IdP publishes its
metadata. Nothing is shared with a system-wide SimpleSAMLphp: the IdP reads only the
directory named by SIMPLESAMLPHP_CONFIG_DIR.

- `register_sp(...)` adds or replaces a remote SP. SimpleSAMLphp reads its metadata files on
  every request (and opcache is off), so a registration works at once, without a restart.
- `login(http, url, username, password)` drives the IdP's pages with a `requests.Session`,
  from an SP's AuthnRequest redirect or an IdP-initiated URL, up to the auto-submitting
  form that would carry the SAMLResponse to the SP. It never posts that form.
- `follow(http, url)` drives the IdP until it hands a message to an SP (single logout).
- `rotate_key()` / `stage_key()` change the signing key as an IdP admin would.

Users (exampleauth:UserPass, all with the password `PASSWORD`) are in `USERS`. Attributes
are sent under their LDAP-style friendly names (uid, mail, givenName, ...) with the
`basic` NameFormat. The persistent NameID is the user's `uid` (`simplesaml.nameidattribute`).

The session fixture `saml_idp` (import `saml_idp_fixture`) fails (never skips) when PHP or SimpleSAMLphp is missing.
"""

from __future__ import annotations

import base64
import html
import os
import secrets
import shutil
import tempfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.saml_forge import self_signed
from tests.services import (
    HOST,
    ChildServer,
    ServiceError,
)

INSTALL_HINT = "run `make test` or scripts/install-system-deps.sh"
TEMPLATES = Path(__file__).resolve().parent / "templates"
# Where Debian's simplesamlphp package puts the application; overridable for other layouts.
SIMPLESAMLPHP_DIR = Path(
    os.environ.get("SSO_BRIDGE_TEST_SIMPLESAMLPHP", "/usr/share/simplesamlphp")
)
HTTP_TIMEOUT = 15.0

PASSWORD = "password"  # every test user's password (tests only)

PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ATTRNAME_BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"

# username -> attributes (every value a list, as SAML has it). The persistent NameID is uid.
USERS: dict[str, dict[str, list[str]]] = {
    "ada": {
        "uid": ["E1001"],
        "mail": ["ada@acme.example"],
        "givenName": ["Ada"],
        "sn": ["Lovelace"],
        "displayName": ["Ada Lovelace"],
        "department": ["Engineering"],
        "l": ["London"],
        "preferredLanguage": ["en-GB"],
        "memberOf": ["engineering", "staff"],
        "employeeType": ["active"],
    },
    "zoe": {
        "uid": ["E1002"],
        "mail": ["zoe@acme.example"],
        "givenName": ["Zoë"],
        "sn": ["Ørsted-Ünal"],
        "displayName": ["Zoë Ørsted-Ünal 佐藤"],
        "department": ["Forschung & Entwicklung"],
        "l": ["København"],
        "preferredLanguage": ["da-DK"],
        "memberOf": ["research", "staff"],
        "employeeType": ["active"],
    },
    "nomail": {
        "uid": ["E1003"],
        "givenName": ["Noah"],
        "sn": ["Mailless"],
        "displayName": ["Noah Mailless"],
        "department": ["Warehouse"],
        "l": ["Leeds"],
        "preferredLanguage": ["en-GB"],
        "memberOf": ["staff"],
        "employeeType": ["active"],
    },
    "leaver": {
        "uid": ["E1004"],
        "mail": ["leaver@acme.example"],
        "givenName": ["Lee"],
        "sn": ["Ver"],
        "displayName": ["Lee Ver"],
        "department": ["Sales"],
        "l": ["Paris"],
        "preferredLanguage": ["fr-FR"],
        "memberOf": ["sales", "staff"],
        "employeeType": ["terminated"],
    },
}


class MissingSimpleSamlPhp(ServiceError):
    """PHP or SimpleSAMLphp is not installed."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is not installed: {INSTALL_HINT}")


class IdpError(AssertionError):
    """The IdP did not do what the test expected (wrong password, error page, ...)."""


# --- PHP literals ------------------------------------------------------------------------


def php_literal(value: Any, indent: int = 0) -> str:
    """`value` (None, bool, int, str, list, dict) as a PHP expression."""
    pad = "    " * (indent + 1)
    end = "    " * indent
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str | Path):
        # In single quotes PHP knows only two escapes: \\ and \'.
        text = str(value).replace("\\", "\\\\").replace("'", "\\'")
        return f"'{text}'"
    if isinstance(value, Mapping):
        if not value:
            return "[]"
        items = [
            f"{pad}{php_literal(key)} => {php_literal(item, indent + 1)},"
            for key, item in value.items()
        ]
        return "[\n" + "\n".join(items) + f"\n{end}]"
    if isinstance(value, Sequence):
        if not value:
            return "[]"
        items = [f"{pad}{php_literal(item, indent + 1)}," for item in value]
        return "[\n" + "\n".join(items) + f"\n{end}]"
    raise TypeError(f"no PHP literal for {type(value).__name__}")


def _render(template: str, values: Mapping[str, Any], indent: int = 0) -> str:
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace("{{ " + name + " }}", php_literal(value, indent))
    if "{{ " in text:
        raise ValueError(f"{template}: a placeholder was left: {text[text.index('{{ ') :][:40]}")
    return text


def _write(path: Path, text: str) -> None:
    # Write then rename: a request being served never reads half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- keys ----------------------------------------------------------------------------------


def make_key_and_cert(
    common_name: str, days: int = 3650
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """An RSA-2048 key and a self-signed SHA-256 certificate for it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, self_signed(key, common_name, days)


def key_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def cert_data(pem: str) -> str:
    """The base64 body of a PEM certificate, on one line (as in metadata's certData)."""
    cert = x509.load_pem_x509_certificate(pem.encode())
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


@dataclass(frozen=True)
class _KeyPair:
    key_file: str  # relative to cert/
    cert_file: str
    cert_pem: str


# --- HTML forms ------------------------------------------------------------------------------


@dataclass
class _Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self._form: _Form | None = None
        self._text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {name: value or "" for name, value in attrs}
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "form":
            self._form = _Form(attr.get("action", ""), attr.get("method", "get").lower())
            self.forms.append(self._form)
        elif tag in ("input", "button") and self._form is not None:
            name = attr.get("name")
            kind = attr.get("type", "text").lower()
            if name and kind not in ("submit", "button", "checkbox", "radio"):
                self._form.fields[name] = attr.get("value", "")
                self._form.types[name] = kind

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        if tag == "form":
            self._form = None

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self._text.append(data.strip())

    @property
    def text(self) -> str:
        return " ".join(self._text)


def _parse(page: str) -> _FormParser:
    parser = _FormParser()
    parser.feed(page)
    parser.close()
    return parser


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def decode_redirect_message(url: str) -> str:
    """The XML of the SAMLRequest or SAMLResponse in an HTTP-Redirect binding URL."""
    params = dict(parse_qsl(urlsplit(url).query))
    value = params.get("SAMLRequest") or params.get("SAMLResponse")
    if value is None:
        raise ValueError(f"no SAMLRequest or SAMLResponse in {url}")
    return zlib.decompress(base64.b64decode(value), -15).decode("utf-8")


def decode_post_message(value: str) -> str:
    """The XML of a SAMLRequest or SAMLResponse form field (HTTP-POST binding)."""
    return base64.b64decode(value).decode("utf-8")


# --- the IdP -----------------------------------------------------------------------------------


class SimpleSamlIdp(ChildServer):
    """SimpleSAMLphp as a SAML 2.0 IdP on a free 127.0.0.1 port; creating one starts it."""

    name = "SimpleSAMLphp (php -S)"

    def __init__(self, *, admin_password: str = "admin-password") -> None:
        self.php = shutil.which("php")
        if self.php is None:
            raise MissingSimpleSamlPhp("php (php-cli)")
        self.docroot = SIMPLESAMLPHP_DIR / "www"
        if not (self.docroot / "saml2" / "idp" / "SSOService.php").is_file():
            raise MissingSimpleSamlPhp("SimpleSAMLphp (the simplesamlphp package)")
        self.admin_password = admin_password
        self.secret_salt = secrets.token_hex(24)
        self.dir = Path(tempfile.mkdtemp(prefix="sso-bridge-saml-idp-")).resolve()
        self.config_dir = self.dir / "config"
        self.metadata_dir = self.dir / "metadata"
        self.cert_dir = self.dir / "cert"
        self.log_path = self.dir / "server.log"
        for sub in ("config", "metadata", "cert", "data", "tmp", "log", "sessions"):
            (self.dir / sub).mkdir()
        self._key = f"saml-idp:{self.dir}"
        self._users: dict[str, tuple[str, dict[str, list[str]]]] = {
            name: (PASSWORD, attributes) for name, attributes in USERS.items()
        }
        self._sps: dict[str, dict[str, Any]] = {}
        self._keys: list[_KeyPair] = []
        self._signing: _KeyPair | None = None
        self._staged: _KeyPair | None = None  # stage_key(), not yet signing
        self._extra_cert: _KeyPair | None = None  # published too, as 'new_certificate'
        self._begin()
        try:
            self._signing = self._new_key_pair()
            self._start()
        except BaseException:
            self.stop()
            raise

    def __repr__(self) -> str:
        return f"<SimpleSamlIdp {self.base_url} running={self.running}>"

    # --- addresses ---

    @property
    def base_url(self) -> str:
        """The root of SimpleSAMLphp, with a trailing slash."""
        return f"http://{HOST}:{self.port}/"

    @property
    def entity_id(self) -> str:
        return self.base_url + "saml2/idp/metadata.php"

    @property
    def metadata_url(self) -> str:
        """The IdP's SAML 2.0 metadata (XML)."""
        return self.base_url + "saml2/idp/metadata.php"

    @property
    def sso_url(self) -> str:
        """SingleSignOnService (HTTP-Redirect and HTTP-POST)."""
        return self.base_url + "saml2/idp/SSOService.php"

    @property
    def slo_url(self) -> str:
        """SingleLogoutService (HTTP-Redirect and HTTP-POST)."""
        return self.base_url + "saml2/idp/SingleLogoutService.php"

    @property
    def cert_pem(self) -> str:
        """The certificate of the key the IdP signs with now."""
        assert self._signing is not None
        return self._signing.cert_pem

    @property
    def published_certs(self) -> list[str]:
        """Every signing certificate in the IdP's metadata (PEM), the signing one first."""
        return [pair.cert_pem for pair in (self._signing, self._extra_cert) if pair is not None]

    def idp_initiated_url(self, sp_entity_id: str, relay_state: str | None = None) -> str:
        """Unsolicited (IdP-first) SSO toward a registered SP, the response without InResponseTo."""
        params = {"spentityid": sp_entity_id}
        if relay_state is not None:
            params["RelayState"] = relay_state
        return f"{self.sso_url}?{urlencode(params)}"

    def idp_initiated_logout_url(self, return_to: str) -> str:
        """Logout started at the IdP: it sends a LogoutRequest to each SP of the session."""
        return f"{self.slo_url}?{urlencode({'ReturnTo': return_to})}"

    def metadata_xml(self) -> str:
        response = requests.get(self.metadata_url, timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        return response.text

    # --- service providers ---

    def register_sp(
        self,
        entity_id: str,
        acs_url: str,
        slo_url: str | None = None,
        sp_cert_pem: str | None = None,
        sign_assertion: bool = True,
        sign_response: bool = False,
        encrypt_assertion: bool = False,
        nameid_format: str = PERSISTENT,
        nameid_attribute: str | None = "uid",
        attributes_release: Sequence[str] | None = None,
        *,
        validate_signatures: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Add (or replace) a remote SP in saml20-sp-remote.php; effective from the next request.

        `sp_cert_pem` is published as the SP's certificate (used to encrypt the assertion,
        and to check signed requests when `validate_signatures` is true). `nameid_attribute`
        names the attribute whose first value is the NameID (None: SimpleSAMLphp's opaque
        persistent id, a SHA-1 of the salt, both entity ids and the uid). A transient
        format always gets a random value. `attributes_release` limits the
        attributes sent (None: all of the user's). `extra` adds raw SimpleSAMLphp SP
        metadata options.
        """
        if encrypt_assertion and not sp_cert_pem:
            raise ValueError("encrypt_assertion needs the SP's certificate (sp_cert_pem)")
        if validate_signatures and not sp_cert_pem:
            raise ValueError("validate_signatures needs the SP's certificate (sp_cert_pem)")
        sp: dict[str, Any] = {
            "AssertionConsumerService": [
                {"Binding": BINDING_POST, "Location": acs_url, "index": 0},
            ],
            "NameIDFormat": nameid_format,
            "saml20.sign.assertion": sign_assertion,
            "saml20.sign.response": sign_response,
            "assertion.encryption": encrypt_assertion,
            "signature.algorithm": RSA_SHA256,
            "validate.authnrequest": validate_signatures,
            "validate.logout": validate_signatures,
        }
        if slo_url:
            sp["SingleLogoutService"] = [
                {"Binding": BINDING_REDIRECT, "Location": slo_url},
                {"Binding": BINDING_POST, "Location": slo_url},
            ]
        if sp_cert_pem:
            sp["certData"] = cert_data(sp_cert_pem)
        if nameid_attribute:
            sp["simplesaml.nameidattribute"] = nameid_attribute
        if attributes_release is not None:
            sp["attributes"] = list(attributes_release)
        sp.update(extra or {})
        self._sps[entity_id] = sp
        self._write_sps()

    def unregister_sp(self, entity_id: str) -> None:
        self._sps.pop(entity_id, None)
        self._write_sps()

    # --- users ---

    def set_user(
        self, username: str, attributes: Mapping[str, Sequence[str]], password: str = PASSWORD
    ) -> None:
        """Add or replace a user of the UserPass source (for example a leaver's new status)."""
        self._users[username] = (password, {name: list(v) for name, v in attributes.items()})
        self._write_users()

    def remove_user(self, username: str) -> None:
        self._users.pop(username, None)
        self._write_users()

    # --- keys ---

    def stage_key(self) -> str:
        """Publish a new certificate next to the current one; keep signing with the old key.

        This is SimpleSAMLphp's key rollover (`new_privatekey` / `new_certificate`). A later
        `rotate_key()` switches to the staged key. SimpleSAMLphp publishes at most one
        extra certificate: staging replaces a retired one still published. Returns the new
        certificate.
        """
        self._extra_cert = self._staged = self._new_key_pair()
        self._write_hosted()
        return self._staged.cert_pem

    def rotate_key(self, keep_old_cert: bool = True) -> str:
        """Sign with a new key from now on (the staged one, if any); returns its certificate.

        With `keep_old_cert` the previous certificate stays in the metadata as a second
        signing certificate (in SimpleSAMLphp's `new_certificate` slot), as an IdP does
        while its SPs catch up; `drop_old_cert()` ends that.
        """
        assert self._signing is not None
        old = self._signing
        self._signing = self._staged or self._new_key_pair()
        self._staged = None
        self._extra_cert = old if keep_old_cert else None
        self._write_hosted()
        return self._signing.cert_pem

    def drop_old_cert(self) -> None:
        """Publish only the signing certificate (and a staged one, if any)."""
        self._extra_cert = self._staged
        self._write_hosted()

    # --- driving the IdP with a requests.Session ---

    def login(
        self,
        http: requests.Session,
        sso_redirect_url: str,
        username: str,
        password: str = PASSWORD,
    ) -> tuple[str, dict[str, str]]:
        """Log `username` in at the IdP; returns the ACS URL and the form fields for the SP.

        `sso_redirect_url` is an SP's AuthnRequest redirect (HTTP-Redirect binding) or
        `idp_initiated_url(...)`. The fields are SAMLResponse and, if any, RelayState. If
        the session is already logged in at the IdP, no password is asked. Raises IdpError
        on a refused password or an error page. Never sends anything to the SP.
        """
        url, page = self._get_within(http, sso_redirect_url)
        for _ in range(3):
            parsed = _parse(page)
            found = self._response_form(parsed, url)
            if found is not None:
                return found
            form = next((f for f in parsed.forms if "password" in f.fields), None)
            if form is None:
                raise IdpError(
                    f"the IdP showed neither a login form nor a response at {url}: "
                    f"{parsed.text[:1500]}"
                )
            if _login_failed(page):
                raise IdpError(f"the IdP refused the password of {username!r}")
            fields = dict(form.fields)
            fields["username"] = username
            fields["password"] = password
            action = urljoin(url, form.action or url)
            if form.method == "post":
                url, page = self._send_within(http, "POST", action, data=fields)
            else:
                url, page = self._send_within(http, "GET", action, params=fields)
            if _login_failed(page):
                raise IdpError(f"the IdP refused the password of {username!r}")
        raise IdpError(f"the IdP kept asking for a login at {url}")

    def follow(
        self, http: requests.Session, url: str, data: Mapping[str, str] | None = None
    ) -> tuple[str, dict[str, str], str]:
        """Send `url` to the IdP (GET, or POST with `data`) and follow it until it addresses an SP.

        Returns (endpoint, fields, binding): for HTTP-Redirect the endpoint without its
        query and the query's parameters (SAMLRequest/SAMLResponse, RelayState, SigAlg,
        Signature); for HTTP-POST the form's action and fields. A redirect to a URL
        without a SAML message (such as a logout's ReturnTo) comes back with its query.
        """
        method = "POST" if data is not None else "GET"
        response = self._request(http, method, url, data=data)
        for _ in range(20):
            if response.is_redirect:
                target = urljoin(response.url, response.headers["Location"])
                if not target.startswith(self.base_url):
                    return (
                        _without_query(target),
                        dict(parse_qsl(urlsplit(target).query)),
                        BINDING_REDIRECT,
                    )
                response = self._request(http, "GET", target)
                continue
            self._check_page(response)
            parsed = _parse(response.text)
            for form in parsed.forms:
                if "SAMLRequest" in form.fields or "SAMLResponse" in form.fields:
                    return urljoin(response.url, form.action), dict(form.fields), BINDING_POST
            raise IdpError(f"the IdP stopped at {response.url}: {parsed.text[:1500]}")
        raise IdpError(f"too many redirects from {url}")

    def logout(self, http: requests.Session, slo_redirect_url: str) -> tuple[str, dict[str, str]]:
        """Send an SP's LogoutRequest (redirect URL) to the IdP; returns the SP's SLO URL and
        the LogoutResponse's parameters (SAMLResponse, RelayState, SigAlg, Signature)."""
        endpoint, fields, _binding = self.follow(http, slo_redirect_url)
        if "SAMLResponse" not in fields:
            raise IdpError(f"the IdP did not answer with a LogoutResponse: {endpoint} {fields}")
        return endpoint, fields

    # --- life cycle ---

    # --- internals ---

    def _new_key_pair(self) -> _KeyPair:
        index = len(self._keys) + 1
        key, cert = make_key_and_cert(f"sso-bridge test IdP key {index}")
        pair = _KeyPair(f"idp-{index}.key", f"idp-{index}.crt", cert_pem(cert))
        key_path = self.cert_dir / pair.key_file
        key_path.write_text(key_pem(key))
        key_path.chmod(0o600)
        (self.cert_dir / pair.cert_file).write_text(pair.cert_pem)
        self._keys.append(pair)
        return pair

    def _write_config(self) -> None:
        _write(
            self.config_dir / "config.php",
            _render(
                "config.php",
                {
                    "base_url": self.base_url,
                    "cert_dir": f"{self.cert_dir}/",
                    "metadata_dir": f"{self.metadata_dir}/",
                    "data_dir": f"{self.dir / 'data'}/",
                    "temp_dir": str(self.dir / "tmp"),
                    "log_dir": f"{self.dir / 'log'}/",
                    "session_dir": str(self.dir / "sessions"),
                    "secret_salt": self.secret_salt,
                    "admin_password": self.admin_password,
                },
            ),
        )
        self._write_users()
        self._write_hosted()
        self._write_sps()

    def _write_users(self) -> None:
        users = {
            f"{name}:{password}": attributes for name, (password, attributes) in self._users.items()
        }
        _write(self.config_dir / "authsources.php", _render("authsources.php", {"users": users}, 2))

    def _write_hosted(self) -> None:
        assert self._signing is not None
        keys: dict[str, str] = {
            "privatekey": self._signing.key_file,
            "certificate": self._signing.cert_file,
        }
        if self._extra_cert is not None:
            keys["new_privatekey"] = self._extra_cert.key_file
            keys["new_certificate"] = self._extra_cert.cert_file
        _write(
            self.metadata_dir / "saml20-idp-hosted.php",
            _render("saml20-idp-hosted.php", {"entity_id": self.entity_id, "keys": keys}),
        )

    def _write_sps(self) -> None:
        _write(
            self.metadata_dir / "saml20-sp-remote.php",
            _render("saml20-sp-remote.php", {"sps": self._sps}),
        )

    def _command(self) -> tuple[list[str], dict[str, str]]:
        assert self.php is not None
        argv = [
            self.php,
            # Metadata and users are rewritten while the server runs: no opcode cache.
            "-d", "opcache.enable=0",
            "-d", "opcache.enable_cli=0",
            "-d", "display_errors=stderr",
            "-d", "log_errors=On",
            "-d", "error_reporting=E_ALL & ~E_DEPRECATED",
            "-S", f"{HOST}:{self.port}",
            "-t", str(self.docroot),
        ]  # fmt: skip
        # One process (no PHP_CLI_SERVER_WORKERS): the janitor can then stop it by its pid
        # alone, and SimpleSAMLphp never calls itself, so serial requests are enough.
        env = {**os.environ, "SIMPLESAMLPHP_CONFIG_DIR": str(self.config_dir)}
        env.pop("PHP_CLI_SERVER_WORKERS", None)
        return argv, env

    def _not_ready(self) -> str | None:
        try:
            response = requests.get(self.metadata_url, timeout=2)
            if response.status_code == 200 and "EntityDescriptor" in response.text:
                return None
            return f"HTTP {response.status_code}: {_parse(response.text).text[:1500]}"
        except requests.RequestException as exc:
            return str(exc)

    def _request(
        self, http: requests.Session, method: str, url: str, **kwargs: Any
    ) -> requests.Response:
        return http.request(method, url, allow_redirects=False, timeout=HTTP_TIMEOUT, **kwargs)

    def _send_within(
        self, http: requests.Session, method: str, url: str, **kwargs: Any
    ) -> tuple[str, str]:
        """Send, following redirects only while they stay at the IdP; returns (url, page)."""
        response = self._request(http, method, url, **kwargs)
        for _ in range(20):
            if not response.is_redirect:
                self._check_page(response)
                return response.url, response.text
            target = urljoin(response.url, response.headers["Location"])
            if not target.startswith(self.base_url):
                raise IdpError(f"the IdP redirected away from itself, to {target}")
            response = self._request(http, "GET", target)
        raise IdpError(f"too many redirects from {url}")

    def _get_within(self, http: requests.Session, url: str) -> tuple[str, str]:
        return self._send_within(http, "GET", url)

    def _check_page(self, response: requests.Response) -> None:
        # SimpleSAMLphp shows errors as pages, sometimes with HTTP 200.
        text = response.text
        if response.status_code >= 400 or _is_error_page(text):
            raise IdpError(
                f"the IdP answered {response.request.method} {response.url} with HTTP "
                f"{response.status_code} and an error: {_parse(text).text[:2000]}\n"
                f"the server's log:\n{self.log_tail()}"
            )

    @staticmethod
    def _response_form(parsed: _FormParser, url: str) -> tuple[str, dict[str, str]] | None:
        for form in parsed.forms:
            if "SAMLResponse" in form.fields:
                return urljoin(url, form.action), dict(form.fields)
        return None


def _is_error_page(page: str) -> bool:
    return (
        "errorreport.php" in page
        or "UNHANDLEDEXCEPTION" in page
        or "SimpleSAML\\Error\\" in page
        or "Backtrace:" in page
    )


def _login_failed(page: str) -> bool:
    return "WRONGUSERPASS" in page or "Incorrect username or password" in html.unescape(page)


# --- pytest fixture ------------------------------------------------------------------------------


def start_or_fail() -> SimpleSamlIdp:
    try:
        return SimpleSamlIdp()
    except MissingSimpleSamlPhp as exc:
        missing = str(exc)
    # Fail, never skip: a skipped SAML test would hide a missing check.
    pytest.fail(missing, pytrace=False)


@pytest.fixture(scope="session", name="saml_idp")
def saml_idp_fixture() -> Iterator[SimpleSamlIdp]:
    """`saml_idp`: a real SimpleSAMLphp IdP for the whole session; tests register their SPs.

    Import `saml_idp_fixture` into a conftest.py (or a test module) to make it available.
    """
    idp = start_or_fail()
    try:
        yield idp
    finally:
        idp.stop()
