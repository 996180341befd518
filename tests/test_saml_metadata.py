"""IdP metadata in and SP metadata out: signatures, rollover, refresh, the saved copy."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from onelogin.saml2.metadata import OneLogin_Saml2_Metadata
from onelogin.saml2.utils import OneLogin_Saml2_Utils

from sso_bridge.connectors.saml import SamlConnector
from sso_bridge.connectors.saml_metadata import IdpMetadata, MetadataError
from sso_bridge.keyfiles import generate_private_key, self_signed_certificate, write_private_key
from sso_bridge.settings import SamlConnection
from sso_bridge.state import MemoryStore

BASE_URL = "http://127.0.0.1:5000"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"


def key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    key = generate_private_key("rsa")
    write_private_key(directory / f"{name}.key", key)
    (directory / f"{name}.crt").write_bytes(self_signed_certificate(key, name, 30))
    return directory / f"{name}.key", directory / f"{name}.crt"


def cert_body(path: Path) -> str:
    return "".join(line for line in path.read_text().splitlines() if "CERTIFICATE" not in line)


def cert_text(pem: str) -> str:
    """A certificate as python3-saml keeps it from metadata: base64 without PEM lines."""
    return "".join(line for line in pem.splitlines() if "CERTIFICATE" not in line)


def idp_metadata(*certs: Path, entity_id: str = "https://idp.example.test/idp") -> str:
    descriptors = "".join(
        f'<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>'
        f"{cert_body(cert)}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
        for cert in certs
    )
    return (
        f'<md:EntityDescriptor xmlns:md="{MD}" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" '
        f'entityID="{entity_id}" ID="_md1"><md:IDPSSODescriptor '
        'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        f"{descriptors}"
        '<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" '
        'Location="https://idp.example.test/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>'
    )


def connection(metadata_file: Path, **options: Any) -> SamlConnection:
    return SamlConnection(type="saml", idp_metadata_file=metadata_file, **options)


def test_every_signing_certificate_is_trusted_for_a_rollover(tmp_path: Path) -> None:
    _, old = key_pair(tmp_path, "old")
    _, new = key_pair(tmp_path, "new")
    _, extra = key_pair(tmp_path, "extra")
    (tmp_path / "md.xml").write_text(idp_metadata(old, new))
    metadata = IdpMetadata("hr", connection(tmp_path / "md.xml", idp_cert_files=[extra]), tmp_path)
    signing = metadata.current()["x509certMulti"]["signing"]
    assert len(signing) == 3


def test_signed_metadata_is_verified(tmp_path: Path) -> None:
    fed_key, fed_cert = key_pair(tmp_path, "federation")
    _, idp_cert = key_pair(tmp_path, "idp")
    signed = OneLogin_Saml2_Metadata.sign_metadata(
        idp_metadata(idp_cert), fed_key.read_text(), fed_cert.read_text()
    )
    (tmp_path / "signed.xml").write_bytes(signed if isinstance(signed, bytes) else signed.encode())
    (tmp_path / "unsigned.xml").write_text(idp_metadata(idp_cert))
    _, other_cert = key_pair(tmp_path, "other")
    options = {"idp_metadata_signing_cert_file": fed_cert}
    assert IdpMetadata("hr", connection(tmp_path / "signed.xml", **options), tmp_path).current()
    with pytest.raises(MetadataError, match="signature"):
        IdpMetadata("hr", connection(tmp_path / "unsigned.xml", **options), tmp_path)
    with pytest.raises(MetadataError, match="signature"):
        IdpMetadata(
            "hr",
            connection(tmp_path / "signed.xml", idp_metadata_signing_cert_file=other_cert),
            tmp_path,
        )


def test_metadata_with_a_dtd_or_without_an_idp_is_refused(tmp_path: Path) -> None:
    _, cert = key_pair(tmp_path, "idp")
    (tmp_path / "dtd.xml").write_text('<!DOCTYPE x [<!ENTITY a "b">]>' + idp_metadata(cert))
    with pytest.raises(MetadataError, match="DTD"):
        IdpMetadata("hr", connection(tmp_path / "dtd.xml"), tmp_path)
    (tmp_path / "sp.xml").write_text(
        f'<md:EntityDescriptor xmlns:md="{MD}" entityID="x"><md:SPSSODescriptor '
        'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"/>'
        "</md:EntityDescriptor>"
    )
    with pytest.raises(MetadataError, match="no IdP"):
        IdpMetadata("hr", connection(tmp_path / "sp.xml"), tmp_path)


def test_the_right_entity_is_taken_from_an_aggregate(tmp_path: Path) -> None:
    _, a = key_pair(tmp_path, "a")
    _, b = key_pair(tmp_path, "b")
    inner = [
        idp_metadata(a, entity_id="https://a.example/idp"),
        idp_metadata(b, entity_id="https://b.example/idp"),
    ]
    body = "".join(x.replace(f'xmlns:md="{MD}" ', "").replace(' ID="_md1"', "") for x in inner)
    (tmp_path / "agg.xml").write_text(
        f'<md:EntitiesDescriptor xmlns:md="{MD}" '
        f'xmlns:ds="http://www.w3.org/2000/09/xmldsig#">{body.replace(" xmlns:ds=", " xmlns:x=")}'
        "</md:EntitiesDescriptor>"
    )
    chosen = connection(tmp_path / "agg.xml", idp_entity_id="https://b.example/idp")
    assert IdpMetadata("hr", chosen, tmp_path).current()["entityId"] == "https://b.example/idp"


def test_sp_metadata_publishes_the_next_certificate_and_is_signed(tmp_path: Path) -> None:
    _, idp_cert = key_pair(tmp_path, "idp")
    (tmp_path / "md.xml").write_text(idp_metadata(idp_cert))
    sp_key, sp_cert = key_pair(tmp_path, "sp")
    _, next_cert = key_pair(tmp_path, "sp-next")
    saml = SamlConnector(
        "hr",
        connection(
            tmp_path / "md.xml",
            sp_key_file=sp_key,
            sp_cert_file=sp_cert,
            sp_next_cert_file=next_cert,
        ),
        BASE_URL,
        MemoryStore(),
        tmp_path,
    )
    root = etree.fromstring(saml.sp_metadata())
    assert root.get("entityID") == f"{BASE_URL}/saml/hr/metadata"
    published = {
        e.text.strip() for e in root.iter("{http://www.w3.org/2000/09/xmldsig#}X509Certificate")
    }
    assert cert_body(sp_cert) in published
    assert cert_body(next_cert) in published
    acs = root.find(f".//{{{MD}}}AssertionConsumerService")
    assert acs is not None and acs.get("Location") == f"{BASE_URL}/saml/hr/acs"
    signatures = root.findall("{http://www.w3.org/2000/09/xmldsig#}Signature")
    assert len(signatures) == 1  # signed once, by python3-saml
    assert OneLogin_Saml2_Utils.validate_metadata_sign(saml.sp_metadata(), sp_cert.read_text())


def test_a_due_refresh_runs_in_the_background_and_picks_up_new_keys(
    tmp_path: Path, saml_idp: Any
) -> None:
    now = [0.0]
    settings = SamlConnection(
        type="saml", idp_metadata_url=saml_idp.metadata_url, metadata_refresh_seconds=60
    )
    metadata = IdpMetadata("hr", settings, tmp_path, clock=lambda: now[0])
    first = metadata.current()
    version = metadata.version
    # A staged key is published next to the signing one; harmless to the other tests,
    # which trust every certificate the IdP publishes.
    staged = cert_text(saml_idp.stage_key())
    assert staged not in first["x509certMulti"]["signing"]
    now[0] = 61
    metadata.current()  # due: starts a refresh without waiting for it
    for _ in range(100):
        if metadata.version != version:
            break
        time.sleep(0.05)
    assert metadata.version == version + 1
    assert staged in metadata.current()["x509certMulti"]["signing"]


def test_signed_metadata_cannot_be_wrapped_around_an_attackers_entity(tmp_path: Path) -> None:
    fed_key, fed_cert = key_pair(tmp_path, "federation")
    _, idp_cert = key_pair(tmp_path, "idp")
    _, evil_cert = key_pair(tmp_path, "evil")
    signed = OneLogin_Saml2_Metadata.sign_metadata(
        idp_metadata(idp_cert), fed_key.read_text(), fed_cert.read_text()
    )
    original = etree.fromstring(signed if isinstance(signed, bytes) else signed.encode())
    signature = original.find("{http://www.w3.org/2000/09/xmldsig#}Signature")
    original.remove(signature)
    evil = etree.fromstring(idp_metadata(evil_cert).encode())
    del evil.attrib["ID"]
    wrapper = etree.Element(f"{{{MD}}}EntitiesDescriptor", nsmap={"md": MD})
    wrapper.set("ID", "_wrap")
    for child in (signature, evil, original):
        wrapper.append(child)
    (tmp_path / "attack.xml").write_bytes(etree.tostring(wrapper))
    attack = connection(tmp_path / "attack.xml", idp_metadata_signing_cert_file=fed_cert)
    # The federation's signature still verifies somewhere in the document; it no longer
    # covers the document, so the attacker's key must not become trusted.
    with pytest.raises(MetadataError):
        IdpMetadata("hr", attack, tmp_path)


def test_expired_metadata_is_refused(tmp_path: Path) -> None:
    _, cert = key_pair(tmp_path, "idp")
    old = idp_metadata(cert).replace('ID="_md1"', 'ID="_md1" validUntil="2001-01-01T00:00:00Z"')
    (tmp_path / "old.xml").write_text(old)
    with pytest.raises(MetadataError, match="expired"):
        IdpMetadata("hr", connection(tmp_path / "old.xml"), tmp_path)


class _Down:
    """An HTTP client for which every IdP web server is down."""

    def get(self, *args: Any, **kwargs: Any) -> Any:
        import requests

        raise requests.ConnectionError("down")


def test_the_saved_copy_serves_only_the_url_it_came_from(tmp_path: Path, saml_idp: Any) -> None:
    url = saml_idp.metadata_url
    IdpMetadata("hr", SamlConnection(type="saml", idp_metadata_url=url), tmp_path)  # saves it
    same = IdpMetadata(
        "hr", SamlConnection(type="saml", idp_metadata_url=url), tmp_path, http=_Down()
    )  # type: ignore[arg-type]
    assert same.source == "saved copy"
    other = IdpMetadata(
        "hr", SamlConnection(type="saml", idp_metadata_url=url + "?v=2"), tmp_path, http=_Down()
    )  # type: ignore[arg-type]
    assert other.source == "none"
    with pytest.raises(Exception, match="no usable metadata"):
        other.current()
