"""The IdP's SAML metadata: loaded from a file or a URL, refreshed, verified, kept.

A metadata URL is fetched at start and again every ``metadata_refresh_seconds``
(in the background, so no login waits for it). Each good copy is written to
``<var_dir>/saml/<id>/idp-metadata.xml``; when the URL fails, the last good copy
is used, so an IdP's web server being down does not stop logins that its
(unchanged) keys can still vouch for. When a metadata signing certificate is
configured, unsigned or wrongly signed metadata is refused, from the URL and
from the disk alike.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from pydantic import ValidationError

from .. import errors
from ..fetch import FetchError, fetch_bounded, outbound_session
from ..logs import get_logger
from ..settings import SLUG, SamlConnection
from .saml_xml import DS, check_signatures, parse

MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"

log = get_logger("sso_bridge.connectors.saml")

MAX_METADATA_BYTES = 5 * 1024 * 1024
RETRY_WHEN_UNUSABLE = 30
FETCH_SECONDS = 10


class MetadataError(ValueError):
    """Metadata that cannot be used; the message says why."""


def read_pem(path: Path) -> str:
    return path.read_text()


def parse_idp_metadata(xml: bytes, settings: SamlConnection) -> dict[str, Any]:
    """python3-saml's idp settings from metadata, after our own checks on it."""
    try:
        root = parse(xml)  # refuses DTDs, entities, comments
        if settings.idp_metadata_signing_cert_file is not None:
            _check_metadata_signature_shape(root)
    except errors.BridgeError as exc:
        raise MetadataError(f"metadata refused: {exc.detail}") from None
    if settings.idp_metadata_signing_cert_file is not None:
        cert = read_pem(settings.idp_metadata_signing_cert_file)
        if not OneLogin_Saml2_Utils.validate_metadata_sign(xml, cert, validatecert=False):
            raise MetadataError("the metadata signature does not verify with the configured cert")
    _check_valid_until(root)
    try:
        parsed = OneLogin_Saml2_IdPMetadataParser.parse(xml, entity_id=settings.idp_entity_id)
    except Exception as exc:
        raise MetadataError(f"metadata cannot be parsed: {exc}") from None
    idp = parsed.get("idp")
    if not idp or not idp.get("entityId") or not idp.get("singleSignOnService", {}).get("url"):
        raise MetadataError(
            "no IdP with an HTTP-Redirect SingleSignOnService in the metadata"
            + (f" for entity {settings.idp_entity_id!r}" if settings.idp_entity_id else "")
        )
    signing = _certs(idp, "signing")
    signing += [read_pem(path) for path in settings.idp_cert_files]
    if not signing:
        raise MetadataError("the metadata names no signing certificate for the IdP")
    # Several signing certificates are trusted at once, so an IdP can roll its key over.
    idp.pop("x509cert", None)
    idp["x509certMulti"] = {"signing": signing, "encryption": _certs(idp, "encryption")}
    return dict(idp)


def _check_metadata_signature_shape(root: Any) -> None:
    """One signature, on the root element, over the root element, with allowed methods.

    python3-saml's validate_metadata_sign accepts any verifying signature anywhere in
    the document: move the federation's signature into a wrapper and put an attacker's
    EntityDescriptor first, and the attacker's key would be trusted (metadata XSW).
    """
    signatures = list(root.iter(DS + "Signature"))
    if len(signatures) != 1 or signatures[0].getparent() is not root:
        raise errors.SamlSignatureWrapping("metadata must carry one signature, on its root")
    check_signatures(root, allowed_parents=(root.tag,))


def _check_valid_until(root: Any) -> None:
    """Refuse metadata past its validUntil: an old copy replayed brings back old keys."""
    now = time.time()
    for element in [root, *root.iter(MD + "EntityDescriptor")]:
        value = element.get("validUntil")
        if value is None:
            continue
        try:
            expiry = OneLogin_Saml2_Utils.parse_SAML_to_time(value)
        except ValueError:
            raise MetadataError(f"validUntil {value!r} is not a time") from None
        if expiry <= now:
            raise MetadataError(f"the metadata expired at {value} (validUntil)")


def _certs(idp: dict[str, Any], use: str) -> list[str]:
    """The IdP's certificates for ``use`` (signing, encryption) as python3-saml parsed them."""
    certs = list(idp.get("x509certMulti", {}).get(use, []))
    if not certs and idp.get("x509cert"):
        certs = [idp["x509cert"]]
    return certs


def fetch_metadata(http: requests.Session, url: str) -> bytes:
    """The metadata document at ``url``: no redirects, bounded in size and time."""
    try:
        return fetch_bounded(http, url, MAX_METADATA_BYTES, FETCH_SECONDS)
    except FetchError as exc:
        raise MetadataError(str(exc)) from None


def describe_idp_metadata(
    source: str, connection_id: str, entity_id: str | None = None
) -> dict[str, Any]:
    """What `connections import-metadata` shows: the IdP, its certificates, a config block."""
    if not SLUG.fullmatch(connection_id):
        raise ValueError(f"--id {connection_id!r} must be a lowercase slug (a-z, 0-9, -)")
    is_url = source.startswith(("https://", "http://"))
    try:
        settings = SamlConnection(
            type="saml",
            idp_metadata_url=source if is_url else None,
            idp_metadata_file=None if is_url else Path(source),
            idp_entity_id=entity_id,
        )
    except ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    try:
        if is_url:
            xml = fetch_metadata(outbound_session(None), source)
        else:
            xml = Path(source).read_bytes()
        idp = parse_idp_metadata(xml, settings)
    except (OSError, requests.RequestException) as exc:
        raise ValueError(f"cannot read {source}: {exc}") from None
    certificates = [_certificate_facts(pem) for pem in idp["x509certMulti"]["signing"]]
    where = (
        f'idp_metadata_url = "{source}"'
        if is_url
        else f'idp_metadata_file = "{Path(source).resolve()}"'
    )
    toml = "\n".join(
        [
            f"[connections.{connection_id}]",
            'type = "saml"',
            f'display_name = "{connection_id}"',
            where,
            *([f'idp_entity_id = "{entity_id}"'] if entity_id else []),
            f'# sp_key_file = "certs/{connection_id}-sp.key"    # sso-bridge certs generate …',
            f'# sp_cert_file = "certs/{connection_id}-sp.crt"',
            "# allow_unsolicited = true    # for a Training tab that launches IdP-initiated",
        ]
    )
    lines = [
        f"IdP entity id:   {idp['entityId']}",
        f"single sign-on:  {idp['singleSignOnService']['url']}",
        f"single logout:   {idp.get('singleLogoutService', {}).get('url') or '(none)'}",
        *(f"signing cert:    sha256 {c['sha256']}  expires {c['expires']}" for c in certificates),
    ]
    return {
        "entity_id": idp["entityId"],
        "sso_url": idp["singleSignOnService"]["url"],
        "certificates": certificates,
        "summary": "\n".join(lines),
        "toml": toml,
    }


def _certificate_facts(pem_or_b64: str) -> dict[str, str]:
    body = (
        pem_or_b64
        if "BEGIN CERTIFICATE" in pem_or_b64
        else (
            "-----BEGIN CERTIFICATE-----\n" + pem_or_b64.strip() + "\n-----END CERTIFICATE-----\n"
        )
    )
    cert = x509.load_pem_x509_certificate(body.encode())
    return {
        "sha256": cert.fingerprint(hashes.SHA256()).hex(":"),
        "expires": cert.not_valid_after_utc.date().isoformat(),
    }


class IdpMetadata:
    """The current IdP settings of one connection, kept fresh."""

    def __init__(
        self,
        connection_id: str,
        settings: SamlConnection,
        var_dir: Path,
        http: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._id = connection_id
        self._settings = settings
        self._clock = clock
        self._cache_file = var_dir / "saml" / connection_id / "idp-metadata.xml"
        self._source_file = self._cache_file.with_name("idp-metadata.url")
        self._http = http or outbound_session(None)
        self._lock = threading.Lock()
        self._refreshing = False
        self._idp: dict[str, Any] | None = None
        self._loaded_at = 0.0
        self.version = 0
        self.source = "none"
        if settings.idp_metadata_file is not None:
            # A file is the admin's own copy: a bad one stops the start with its reason.
            try:
                xml = settings.idp_metadata_file.read_bytes()
            except OSError as exc:
                raise MetadataError(f"cannot read {exc.filename}: {exc.strerror}") from None
            self._install(parse_idp_metadata(xml, settings), "file")
        else:
            self.refresh()

    def current(self) -> dict[str, Any]:
        """The IdP settings to validate with; a refresh is started when they are due."""
        if self._settings.idp_metadata_url is not None and self._due():
            self._refresh_in_background()
        if self._idp is None:
            raise errors.SamlMetadataUnavailable(
                f"no usable metadata for connection {self._id} (URL failing, no saved copy)"
            )
        return self._idp

    def refresh(self) -> bool:
        """Fetch the metadata URL now; on failure fall back to the saved copy. True if usable."""
        url = self._settings.idp_metadata_url
        assert url is not None
        try:
            xml = self._fetch(url)
            idp = parse_idp_metadata(xml, self._settings)
        except (MetadataError, requests.RequestException) as exc:
            log.warning("saml_metadata_fetch_failed", connection=self._id, why=str(exc))
            if self._idp is None:
                self._load_saved_copy()
            # Retry after the interval, not on every login; but while there is nothing usable
            # at all, soon, so the connection recovers shortly after the IdP does.
            interval = self._settings.metadata_refresh_seconds
            delay = interval if self._idp is not None else min(interval, RETRY_WHEN_UNUSABLE)
            self._loaded_at = self._clock() - interval + delay
            return self._idp is not None
        self._save(xml)
        self._install(idp, "url")
        return True

    def _due(self) -> bool:
        return self._clock() - self._loaded_at >= self._settings.metadata_refresh_seconds

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True

        def run() -> None:
            try:
                self.refresh()
            finally:
                with self._lock:
                    self._refreshing = False

        threading.Thread(target=run, name=f"saml-metadata-{self._id}", daemon=True).start()

    def _fetch(self, url: str) -> bytes:
        return fetch_metadata(self._http, url)

    def _load_saved_copy(self) -> None:
        try:
            # The copy is used only for the URL it came from: after the admin points the
            # connection at another IdP, the old IdP's keys must not be trusted.
            if self._source_file.read_text() != self._settings.idp_metadata_url:
                return
            xml = self._cache_file.read_bytes()
            idp = parse_idp_metadata(xml, self._settings)
        except OSError:
            return
        except MetadataError as exc:
            log.warning("saml_metadata_saved_copy_refused", connection=self._id, why=str(exc))
            return
        log.warning("saml_metadata_saved_copy_used", connection=self._id)
        self._install(idp, "saved copy")

    def _save(self, xml: bytes) -> None:
        self._cache_file.parent.mkdir(parents=True, exist_ok=True)
        for path, data in (
            (self._cache_file, xml),
            (self._source_file, (self._settings.idp_metadata_url or "").encode()),
        ):
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(data)
            os.replace(temporary, path)  # atomic: a crash never leaves half a file

    def _install(self, idp: dict[str, Any], source: str) -> None:
        if idp != self._idp:
            self.version += 1
            log.info(
                "saml_metadata_loaded",
                connection=self._id,
                source=source,
                entity_id=idp.get("entityId"),
            )
        self._idp = idp
        self.source = source
        self._loaded_at = self._clock()
