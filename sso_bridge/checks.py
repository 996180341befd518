"""`sso-bridge check`: every problem with a deployment, one line each, before it serves.

A row is ``ok``, a failure (``problem``), or ``ok`` with a ``warning``: something
that works as configured but very likely not as meant.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from cryptography import x509

from .connectors.token_keys import TokenKeyring
from .db import Database
from .errors import BridgeError
from .settings import Settings
from .state import MemoryStore, open_store


def run_checks(settings: Settings) -> list[dict[str, Any]]:
    results = [{"check": "configuration", "ok": True}]

    def attempt(name: str, probe: Callable[[], object]) -> None:
        try:
            # Most probes return whatever they built; only a string is a warning.
            warning = probe()
            row: dict[str, Any] = {"check": name, "ok": True}
            if isinstance(warning, str):
                row["warning"] = warning
            results.append(row)
        except BridgeError as exc:
            results.append({"check": name, "ok": False, "problem": f"{exc.code}: {exc.detail}"})
        except Exception as exc:
            results.append({"check": name, "ok": False, "problem": str(exc) or type(exc).__name__})

    def database() -> None:
        db = Database(settings.database.url, settings.database.pool_size)
        try:
            db.ping()
        finally:
            db.dispose()

    def store() -> None:
        url = settings.store.url.get_secret_value() if settings.store.url else None
        open_store(url, settings.store.key_prefix, settings.store.timeout).ping()

    def provider_keys() -> None:
        from .provider_keys import ProviderKeys

        ProviderKeys(settings.provider.signing_key_files)

    def lms() -> str | None:
        from .lms import build_adapter
        from .lms.base import COURSES, GROUPS

        db = Database(settings.database.url, settings.database.pool_size)
        try:
            adapter = build_adapter(settings.lms, db, settings.rules, settings.outbound_proxy)
            missing = []
            if any(rule.groups for rule in settings.rules) and GROUPS not in adapter.capabilities:
                missing.append("groups")
            if any(rule.courses for rule in settings.rules) and COURSES not in adapter.capabilities:
                missing.append("courses")
            if missing:
                raise RuntimeError(
                    f"the rules grant {' and '.join(missing)}, which the {adapter.name} "
                    "adapter cannot set"
                )
            # A lookup that finds nobody: proves the URL, the credentials and the API. (The
            # builtin adapter is the bridge's own database, checked above.)
            if adapter.name != "builtin":
                adapter.find("sso-bridge-check")
            # A rule naming a course the LMS lacks does not stop logins (the grant is
            # skipped and audited), so this is the place that says so.
            absent = adapter.missing_targets(
                {g for rule in settings.rules for g in rule.groups},
                {c for rule in settings.rules for c in rule.courses},
            )
            if absent:
                raise RuntimeError(
                    "the rules name what the LMS does not have: " + ", ".join(absent)
                )
            if settings.lms.type == "moodle" and settings.lms.moodle_managed_cohorts is None:
                # Moodle has no "cohorts of a user" call: without the list every login
                # reads the members of every cohort on the site.
                return (
                    "lms.moodle_managed_cohorts is unset: each login reads the members of "
                    "every cohort on the site; list the cohorts the rules manage"
                )
            return None
        finally:
            db.dispose()

    attempt("database reachable", database)
    attempt("store reachable", store)
    attempt("provider signing keys", provider_keys)
    attempt(f"LMS adapter {settings.lms.type}", lms)
    moodle_oidc = settings.lms.type == "moodle" and settings.lms.moodle_login == "oidc"
    if moodle_oidc:
        attempt("Moodle sign-in through the provider", partial(moodle_oidc_client, settings))
    for index, client in enumerate(settings.provider.clients):
        if not client.require_pkce and not (
            moodle_oidc and client.client_id == settings.lms.client_id
        ):
            attempt(f"provider client {client.client_id}", partial(_pkce_off, index))
    for cid, connection in settings.connections.items():
        if connection.type == "token":
            attempt(
                f"connection {cid}: keys", partial(TokenKeyring, cid, connection, MemoryStore())
            )
        elif connection.type in ("oidc", "oauth2"):
            attempt(f"connection {cid}: provider endpoints", partial(_provider, cid, settings))
        elif connection.type == "saml":
            attempt(f"connection {cid}: IdP metadata", partial(_idp_metadata, cid, settings))
            for name, path in (
                ("SP certificate", connection.sp_cert_file),
                ("next SP certificate", connection.sp_next_cert_file),
            ):
                if path is not None:
                    attempt(f"connection {cid}: {name}", partial(_certificate_valid, path))
    return results


# What Moodle's OpenID Connect plugins (auth_oidc, core auth_oauth2) send: a client secret
# at the token endpoint, and no PKCE.
MOODLE_PKCE_HINT = "Moodle's OIDC plugins send no PKCE, so the provider refuses their sign-in"


def moodle_oidc_client(settings: Settings) -> str | None:
    """With ``moodle_login = "oidc"``: a warning when the LMS client will refuse Moodle.

    A warning, not a failure: a plugin that does send PKCE works as configured. (That
    the client exists is checked with the settings.)
    """
    lms = settings.lms
    index, client = next(
        (i, c) for i, c in enumerate(settings.provider.clients) if c.client_id == lms.client_id
    )
    if not client.require_pkce:
        return None
    key = f"provider.clients.{index}"
    if client.client_secret is None:
        return (
            f"{key} ({client.client_id!r}) is a public client: {MOODLE_PKCE_HINT}; set "
            f"{key}.client_secret and {key}.require_pkce = false (docs/lms.md, 2.4)"
        )
    return f"{key}.require_pkce is true: {MOODLE_PKCE_HINT}; set it to false (docs/lms.md, 2.4)"


def _pkce_off(index: int) -> str:
    # Allowed (a confidential client with a nonce), but only Moodle's OpenID Connect
    # sign-in is known to need it: anywhere else it is probably left over.
    return (
        f"provider.clients.{index}.require_pkce is false: turn PKCE back on unless this "
        "client cannot send it (docs/lms.md, 2.4)"
    )


def _provider(connection_id: str, settings: Settings) -> None:
    from .connectors.oidc import OidcConnector
    from .fetch import outbound_session

    connection = settings.connections[connection_id]
    assert connection.type in ("oidc", "oauth2")
    http = outbound_session(settings.outbound_proxy)
    OidcConnector(connection_id, connection, settings.base_url, MemoryStore(), http).endpoints()


def _idp_metadata(connection_id: str, settings: Settings) -> None:
    from .connectors.saml_metadata import IdpMetadata
    from .fetch import outbound_session

    connection = settings.connections[connection_id]
    assert connection.type == "saml"
    # Through the configured proxy, as the running bridge fetches it.
    http = outbound_session(settings.outbound_proxy)
    metadata = IdpMetadata(connection_id, connection, settings.var_dir, http)
    metadata.current()  # raises SamlMetadataUnavailable with the reason
    if metadata.source == "saved copy":
        raise RuntimeError("the metadata URL fails; the last good copy is in use")


# Certificates are trusted by their exact bytes in SAML, not by their dates, but an
# expired one is a sign the rollover is overdue (and some IdPs do refuse it).
EXPIRY_WARNING_DAYS = 30


def _certificate_valid(path: Path) -> None:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    days = (cert.not_valid_after_utc - datetime.now(UTC)).days
    if days < EXPIRY_WARNING_DAYS:
        raise RuntimeError(
            f"{path} expires in {days} days: run `sso-bridge certs rotate`"
            if days >= 0
            else f"{path} expired {-days} days ago: run `sso-bridge certs rotate`"
        )
