"""The SimpleSAMLphp test IdP (tests/saml_idp) against python3-saml as the SP.

No SP server runs: the IdP only has to produce the response form, and python3-saml
validates what it would post (strictly: signature, audience, destination, InResponseTo,
times). These tests prove the harness that the SAML connector tests build on.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from cryptography import x509
from lxml import etree
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from onelogin.saml2.logout_response import OneLogin_Saml2_Logout_Response
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings

import tests.saml_idp as saml_idp_module
from tests.saml_idp import (
    BINDING_REDIRECT,
    EMAIL,
    PASSWORD,
    PERSISTENT,
    USERS,
    IdpError,
    SimpleSamlIdp,
    cert_data,
    cert_pem,
    decode_post_message,
    decode_redirect_message,
    key_pem,
    make_key_and_cert,
    php_literal,
    saml_idp_fixture,  # noqa: F401 - the saml_idp fixture
)

SP_BASE = "http://127.0.0.1:9/saml/test"
NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
}


class Sp:
    """A python3-saml SP at SP_BASE/<name>, registered at the IdP with the given options."""

    def __init__(self, idp: SimpleSamlIdp, name: str, **register: Any) -> None:
        self.idp = idp
        base = f"{SP_BASE}/{name}" if name else SP_BASE
        self.entity_id = f"{base}/metadata"
        self.acs_url = f"{base}/acs"
        self.slo_url = f"{base}/slo"
        key, cert = make_key_and_cert(f"sso-bridge test SP {name or 'test'}")
        self.key_pem, self.cert_pem = key_pem(key), cert_pem(cert)
        self.path = urlsplit(base).path
        idp.register_sp(self.entity_id, self.acs_url, self.slo_url, self.cert_pem, **register)

    def settings(self, want_assertions_encrypted: bool = False) -> OneLogin_Saml2_Settings:
        # IdP settings from the published metadata, as the bridge's admin would import them.
        idp_data = OneLogin_Saml2_IdPMetadataParser.parse(self.idp.metadata_xml())
        data = OneLogin_Saml2_IdPMetadataParser.merge_settings(
            {
                "strict": True,
                "debug": False,
                "sp": {
                    "entityId": self.entity_id,
                    "assertionConsumerService": {
                        "url": self.acs_url,
                        "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST",
                    },
                    "singleLogoutService": {
                        "url": self.slo_url,
                        "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect",
                    },
                    "NameIDFormat": PERSISTENT,
                    "x509cert": self.cert_pem,
                    "privateKey": self.key_pem,
                },
                "security": {
                    "wantAssertionsSigned": True,
                    "wantMessagesSigned": False,
                    "wantAssertionsEncrypted": want_assertions_encrypted,
                    "wantNameId": True,
                    "requestedAuthnContext": False,
                    "rejectDeprecatedAlgorithm": True,
                    "signatureAlgorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
                    "digestAlgorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
                },
            },
            idp_data,
        )
        return OneLogin_Saml2_Settings(data, sp_validation_only=True)

    def request_data(self, endpoint: str, post: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "https": "off",
            # host:port (python3-saml deprecates a separate server_port).
            "http_host": "127.0.0.1:9",
            "script_name": f"{self.path}/{endpoint}",
            "get_data": {},
            "post_data": post or {},
        }

    def start_login(
        self, settings: OneLogin_Saml2_Settings, relay_state: str = "/course/42"
    ) -> tuple[str, str]:
        """The AuthnRequest redirect URL and the request id, as the SP's login route makes them."""
        auth = OneLogin_Saml2_Auth(self.request_data("login"), settings)
        url = auth.login(return_to=relay_state)
        return url, auth.get_last_request_id()

    def validate(
        self,
        settings: OneLogin_Saml2_Settings,
        acs_url: str,
        fields: dict[str, str],
        request_id: str | None,
    ) -> OneLogin_Saml2_Response:
        assert acs_url == self.acs_url
        response = OneLogin_Saml2_Response(settings, fields["SAMLResponse"])
        request_data = self.request_data("acs", fields)
        valid = response.is_valid(request_data, request_id, raise_exceptions=True)
        assert valid, response.get_error()
        return response


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A fresh browser: no IdP session cookie from another test."""
    with requests.Session() as session:
        yield session


def _signing_cert(xml: str) -> str:
    """The certificate in the assertion's (or else the response's) signature, base64 DER."""
    root = etree.fromstring(xml.encode())
    certs = root.xpath("//saml:Assertion/ds:Signature//ds:X509Certificate", namespaces=NS)
    certs = certs or root.xpath("/samlp:Response/ds:Signature//ds:X509Certificate", namespaces=NS)
    assert certs, "no signature with a certificate"
    return "".join(certs[0].text.split())


def test_php_literal_escapes_quotes_and_backslashes() -> None:
    assert php_literal("it's a \\ test") == "'it\\'s a \\\\ test'"
    assert (
        php_literal({"a": [True, None, 3]})
        == "[\n    'a' => [\n        true,\n        null,\n        3,\n    ],\n]"
    )


def test_startup_is_fast_and_metadata_is_published(saml_idp: SimpleSamlIdp) -> None:
    assert saml_idp.startup_seconds is not None
    assert saml_idp.startup_seconds < 10
    xml = saml_idp.metadata_xml()
    root = etree.fromstring(xml.encode())
    assert root.get("entityID") == saml_idp.entity_id
    locations = root.xpath(
        "//md:SingleSignOnService/@Location", namespaces={"md": root.nsmap["md"]}
    )
    assert saml_idp.sso_url in locations
    assert cert_data(saml_idp.cert_pem) in "".join(xml.split())


def test_sp_initiated_login_validates_in_python3_saml(
    saml_idp: SimpleSamlIdp, http: requests.Session
) -> None:
    sp = Sp(saml_idp, "")
    assert sp.entity_id == "http://127.0.0.1:9/saml/test/metadata"
    assert sp.acs_url == "http://127.0.0.1:9/saml/test/acs"
    settings = sp.settings()
    url, request_id = sp.start_login(settings, relay_state="/course/42?tab=1")
    assert url.startswith(saml_idp.sso_url + "?SAMLRequest=")

    acs_url, fields = saml_idp.login(http, url, "ada", PASSWORD)
    assert fields["RelayState"] == "/course/42?tab=1"
    response = sp.validate(settings, acs_url, fields, request_id)

    assert response.get_nameid() == "E1001"
    assert response.get_nameid_format() == PERSISTENT
    attributes = response.get_attributes()
    for name, values in USERS["ada"].items():
        assert attributes[name] == values, name
    xml = decode_post_message(fields["SAMLResponse"])
    assert f'InResponseTo="{request_id}"' in xml
    assert "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" in xml
    assert "http://www.w3.org/2001/04/xmlenc#sha256" in xml
    assert "attrname-format:basic" in xml

    # A second login in the same browser session is single sign-on: no password asked.
    url, request_id = sp.start_login(settings)
    acs_url, fields = saml_idp.login(http, url, "ada", "not asked")
    assert sp.validate(settings, acs_url, fields, request_id).get_nameid() == "E1001"


def test_wrong_password_is_refused(saml_idp: SimpleSamlIdp, http: requests.Session) -> None:
    sp = Sp(saml_idp, "wrongpw")
    url, _request_id = sp.start_login(sp.settings())
    with pytest.raises(IdpError, match="refused the password"):
        saml_idp.login(http, url, "ada", "wrong")


def test_idp_initiated_login_has_no_in_response_to(
    saml_idp: SimpleSamlIdp, http: requests.Session
) -> None:
    sp = Sp(saml_idp, "idpinit")
    settings = sp.settings()
    url = saml_idp.idp_initiated_url(sp.entity_id, relay_state="/course/7")

    acs_url, fields = saml_idp.login(http, url, "leaver", PASSWORD)
    assert fields["RelayState"] == "/course/7"
    xml = decode_post_message(fields["SAMLResponse"])
    assert "InResponseTo" not in xml
    response = sp.validate(settings, acs_url, fields, None)
    assert response.get_nameid() == "E1004"
    assert response.get_attributes()["employeeType"] == ["terminated"]


def test_utf8_names_round_trip(saml_idp: SimpleSamlIdp, http: requests.Session) -> None:
    sp = Sp(saml_idp, "utf8")
    settings = sp.settings()
    url, request_id = sp.start_login(settings)
    acs_url, fields = saml_idp.login(http, url, "zoe", PASSWORD)
    attributes = sp.validate(settings, acs_url, fields, request_id).get_attributes()
    assert attributes["givenName"] == ["Zoë"]
    assert attributes["sn"] == ["Ørsted-Ünal"]
    assert attributes["displayName"] == ["Zoë Ørsted-Ünal 佐藤"]
    assert attributes["department"] == ["Forschung & Entwicklung"]


def test_user_without_mail_and_attribute_release(
    saml_idp: SimpleSamlIdp, http: requests.Session
) -> None:
    sp = Sp(saml_idp, "release", attributes_release=["uid", "mail", "givenName"])
    settings = sp.settings()
    url, request_id = sp.start_login(settings)
    acs_url, fields = saml_idp.login(http, url, "nomail", PASSWORD)
    response = sp.validate(settings, acs_url, fields, request_id)
    assert response.get_nameid() == "E1003"
    assert response.get_attributes() == {"uid": ["E1003"], "givenName": ["Noah"]}


def test_nameid_variants(saml_idp: SimpleSamlIdp, http: requests.Session) -> None:
    opaque = Sp(saml_idp, "opaque", nameid_attribute=None)
    settings = opaque.settings()
    values = []
    for _ in range(2):
        url, request_id = opaque.start_login(settings)
        response = opaque.validate(
            settings, *saml_idp.login(http, url, "ada", PASSWORD), request_id
        )
        values.append(response.get_nameid())
    assert values[0] == values[1]
    assert len(values[0]) == 40 and values[0] != "E1001"

    email = Sp(saml_idp, "email", nameid_format=EMAIL, nameid_attribute="mail")
    settings = email.settings()
    url, request_id = email.start_login(settings)
    response = email.validate(settings, *saml_idp.login(http, url, "ada", PASSWORD), request_id)
    assert (response.get_nameid(), response.get_nameid_format()) == ("ada@acme.example", EMAIL)


def test_encrypted_assertion_decrypts(saml_idp: SimpleSamlIdp, http: requests.Session) -> None:
    sp = Sp(saml_idp, "encrypted", encrypt_assertion=True)
    settings = sp.settings(want_assertions_encrypted=True)
    url, request_id = sp.start_login(settings)
    acs_url, fields = saml_idp.login(http, url, "ada", PASSWORD)
    xml = decode_post_message(fields["SAMLResponse"])
    assert "EncryptedAssertion" in xml
    assert "Lovelace" not in xml
    response = sp.validate(settings, acs_url, fields, request_id)
    assert response.get_nameid() == "E1001"
    assert response.get_attributes()["sn"] == ["Lovelace"]


def test_signed_response_variant(saml_idp: SimpleSamlIdp, http: requests.Session) -> None:
    sp = Sp(saml_idp, "signedresponse", sign_response=True, sign_assertion=False)
    settings = sp.settings()
    settings.get_security_data()["wantAssertionsSigned"] = False
    settings.get_security_data()["wantMessagesSigned"] = True
    url, request_id = sp.start_login(settings)
    acs_url, fields = saml_idp.login(http, url, "ada", PASSWORD)
    xml = decode_post_message(fields["SAMLResponse"])
    root = etree.fromstring(xml.encode())
    assert root.xpath("/samlp:Response/ds:Signature", namespaces=NS)
    assert not root.xpath("//saml:Assertion/ds:Signature", namespaces=NS)
    assert sp.validate(settings, acs_url, fields, request_id).get_nameid() == "E1001"


def test_users_can_change_while_running(saml_idp: SimpleSamlIdp, http: requests.Session) -> None:
    sp = Sp(saml_idp, "changes")
    settings = sp.settings()
    saml_idp.set_user("temp", {**USERS["ada"], "uid": ["E9001"], "employeeType": ["terminated"]})
    try:
        url, request_id = sp.start_login(settings)
        acs_url, fields = saml_idp.login(http, url, "temp", PASSWORD)
        response = sp.validate(settings, acs_url, fields, request_id)
        assert response.get_nameid() == "E9001"
        assert response.get_attributes()["employeeType"] == ["terminated"]
    finally:
        saml_idp.remove_user("temp")


def test_sp_initiated_logout(saml_idp: SimpleSamlIdp, http: requests.Session) -> None:
    sp = Sp(saml_idp, "logout")
    settings = sp.settings()
    url, request_id = sp.start_login(settings)
    acs_url, fields = saml_idp.login(http, url, "ada", PASSWORD)
    response = sp.validate(settings, acs_url, fields, request_id)

    auth = OneLogin_Saml2_Auth(sp.request_data("logout"), settings)
    logout_url = auth.logout(
        return_to="/bye",
        name_id=response.get_nameid(),
        session_index=response.get_session_index(),
        name_id_format=response.get_nameid_format(),
        spnq=response.get_nameid_spnq(),
    )
    logout_request_id = auth.get_last_request_id()
    assert "<samlp:LogoutRequest" in decode_redirect_message(logout_url)

    slo_url, params = saml_idp.logout(http, logout_url)
    assert slo_url == sp.slo_url
    assert params["RelayState"] == "/bye"
    logout_response = OneLogin_Saml2_Logout_Response(settings, params["SAMLResponse"])
    request_data = sp.request_data("slo")
    request_data["get_data"] = params
    assert logout_response.is_valid(request_data, logout_request_id, raise_exceptions=True)
    assert logout_response.get_status() == "urn:oasis:names:tc:SAML:2.0:status:Success"

    # The IdP session is gone: the next login asks for the password again.
    url, _request_id = sp.start_login(settings)
    with pytest.raises(IdpError, match="refused the password"):
        saml_idp.login(http, url, "ada", "wrong")


def test_idp_initiated_logout(saml_idp: SimpleSamlIdp, http: requests.Session) -> None:
    sp = Sp(saml_idp, "idplogout")
    settings = sp.settings()
    url, request_id = sp.start_login(settings)
    sp.validate(settings, *saml_idp.login(http, url, "ada", PASSWORD), request_id)

    return_to = "http://127.0.0.1:9/logged-out"
    endpoint, params, binding = saml_idp.follow(http, saml_idp.idp_initiated_logout_url(return_to))
    assert (endpoint, binding) == (sp.slo_url, BINDING_REDIRECT)
    assert {"SAMLRequest", "SigAlg", "Signature"} <= params.keys()

    # The SP checks the signed LogoutRequest and answers; the IdP then sends the browser on.
    request_data = sp.request_data("slo")
    request_data["get_data"] = params
    auth = OneLogin_Saml2_Auth(request_data, settings)
    answer_url = auth.process_slo(keep_local_session=True)
    assert not auth.get_errors(), auth.get_last_error_reason()
    assert "<samlp:LogoutRequest" in auth.get_last_request_xml()
    assert ">E1001<" in auth.get_last_request_xml()
    assert answer_url is not None
    assert answer_url.startswith(saml_idp.slo_url + "?SAMLResponse=")
    endpoint, params, _binding = saml_idp.follow(http, answer_url)
    assert endpoint == return_to
    assert "SAMLRequest" not in params and "SAMLResponse" not in params


def test_rotate_key_signs_with_the_new_cert(
    saml_idp: SimpleSamlIdp, http: requests.Session
) -> None:
    sp = Sp(saml_idp, "rotate")
    before = saml_idp.cert_pem
    settings_before = sp.settings()

    staged = saml_idp.stage_key()
    assert saml_idp.cert_pem == before
    xml = "".join(saml_idp.metadata_xml().split())
    assert cert_data(before) in xml
    assert cert_data(staged) in xml

    new = saml_idp.rotate_key()
    assert new == staged == saml_idp.cert_pem
    assert saml_idp.published_certs == [new, before]
    xml = "".join(saml_idp.metadata_xml().split())
    assert cert_data(before) in xml
    assert cert_data(new) in xml

    settings = sp.settings()  # metadata refreshed: both certificates
    url, request_id = sp.start_login(settings)
    acs_url, fields = saml_idp.login(http, url, "ada", PASSWORD)
    assert _signing_cert(decode_post_message(fields["SAMLResponse"])) == cert_data(new)
    assert sp.validate(settings, acs_url, fields, request_id).get_nameid() == "E1001"

    # An SP that still trusts only the old certificate refuses the new signature.
    old_only = OneLogin_Saml2_Response(settings_before, fields["SAMLResponse"])
    assert not old_only.is_valid(sp.request_data("acs", fields), request_id)

    # A rotation without staging generates a key; drop_old_cert ends the rollover.
    newer = saml_idp.rotate_key(keep_old_cert=False)
    assert newer not in (before, new)
    assert saml_idp.published_certs == [newer]
    xml = "".join(saml_idp.metadata_xml().split())
    assert cert_data(new) not in xml
    url, request_id = sp.start_login(sp.settings())
    acs_url, fields = saml_idp.login(http, url, "ada", PASSWORD)
    assert _signing_cert(decode_post_message(fields["SAMLResponse"])) == cert_data(newer)


def test_signed_authn_requests_are_checked_when_asked(
    saml_idp: SimpleSamlIdp, http: requests.Session
) -> None:
    sp = Sp(saml_idp, "signedrequests", validate_signatures=True)
    settings = sp.settings()
    url, _request_id = sp.start_login(settings)
    with pytest.raises(IdpError, match="signature"):
        saml_idp.login(http, url, "ada", PASSWORD)

    settings.get_security_data()["authnRequestsSigned"] = True
    url, request_id = sp.start_login(settings)
    assert "&Signature=" in url
    acs_url, fields = saml_idp.login(http, url, "ada", PASSWORD)
    assert sp.validate(settings, acs_url, fields, request_id).get_nameid() == "E1001"


def test_the_fixture_fails_without_simplesamlphp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(saml_idp_module, "SIMPLESAMLPHP_DIR", tmp_path / "nowhere")
    with pytest.raises(
        pytest.fail.Exception, match=r"run `make test` or scripts/install-system-deps\.sh"
    ):
        saml_idp_module.start_or_fail()


def test_cert_is_rsa_2048_sha256(saml_idp: SimpleSamlIdp) -> None:
    cert = x509.load_pem_x509_certificate(saml_idp.cert_pem.encode())
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"
    assert base64.b64decode(cert_data(saml_idp.cert_pem))


def test_a_second_idp_starts_and_stops_cleanly() -> None:
    idp = SimpleSamlIdp()
    try:
        assert idp.running
        assert idp.startup_seconds is not None
        assert idp.startup_seconds < 10
        assert idp._proc is not None
        pid = idp._proc.pid
    finally:
        idp.stop()
    assert not idp.running
    assert not idp.dir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
