"""The SAML forge, checked against bare python3-saml as the verifier.

Two kinds of tests: the forge builds what it claims (layout, signature placement,
determinism, each attack's shape), and ``test_python3_saml_verdict`` runs every
variant through ``OneLogin_Saml2_Response`` and pins what python3-saml 1.16.0 does
with it. That table is executable documentation: it lists what our SP gets for free
from the library and, in the ACCEPTED rows, what the SP has to refuse itself. The
same table, in prose, is in the docstring of ``tests/saml_forge.py``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from onelogin.saml2 import xmlparser
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_ValidationError
from onelogin.saml2.xml_utils import OneLogin_Saml2_XML

from . import saml_forge as forge
from .saml_forge import KeyPair, ResponseSpec, TestKeys

REQUEST_DATA: dict[str, Any] = {
    "https": "off",
    "http_host": "127.0.0.1",
    "server_port": "9",
    "script_name": "/saml/t/acs",
    "get_data": {},
    "post_data": {},
}

# python3-saml deprecates server_port in favour of a port in http_host; the request data
# above is the shape our SP passes, so the warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:The server_port key:DeprecationWarning")

DS = f"{{{forge.NS_DS}}}"
SAML = f"{{{forge.NS_SAML}}}"
SAMLP = f"{{{forge.NS_SAMLP}}}"
XENC = f"{{{forge.NS_XENC}}}"


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Env:
    """Keys of one test session: the IdP, the SP, an attacker, an EC IdP; a scratch dir."""

    idp: KeyPair
    sp: KeyPair
    attacker: KeyPair
    ec_idp: KeyPair
    tmp: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return Env(
        idp=TestKeys.generate("test IdP"),
        sp=TestKeys.generate("test SP"),
        attacker=TestKeys.generate("test IdP"),  # same name, different key
        ec_idp=TestKeys.generate("test EC IdP", "ec"),
        tmp=tmp_path_factory.mktemp("saml-forge"),
    )


def sp_settings(
    idp_cert: KeyPair, sp: KeyPair, *, want_assertions_signed: bool = True, **security: Any
) -> OneLogin_Saml2_Settings:
    """python3-saml settings of the test SP: strict, signed assertions, no SHA-1."""
    return OneLogin_Saml2_Settings(
        {
            "strict": True,
            "debug": False,
            "sp": {
                "entityId": forge.SP_ENTITY_ID,
                "assertionConsumerService": {
                    "url": forge.SP_ACS_URL,
                    "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST",
                },
                "x509cert": sp.cert_b64,
                "privateKey": sp.key_pem.decode(),
            },
            "idp": {
                "entityId": forge.IDP_ENTITY_ID,
                "singleSignOnService": {
                    "url": "https://idp.example.test/saml/sso",
                    "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect",
                },
                "x509cert": idp_cert.cert_b64,
            },
            "security": {
                "wantAssertionsSigned": want_assertions_signed,
                "rejectDeprecatedAlgorithm": True,
                **security,
            },
        }
    )


Kind = Literal["accepted", "refused", "raises"]


@dataclass(frozen=True)
class Verdict:
    """What python3-saml made of a response: accepted (with its NameID), refused (with
    the error), or raised from the constructor (with the exception)."""

    kind: Kind
    detail: str
    exception: BaseException | None = None
    response: OneLogin_Saml2_Response | None = None


def judge(
    xml: bytes, settings: OneLogin_Saml2_Settings, *, request_id: str | None = None
) -> Verdict:
    try:
        response = OneLogin_Saml2_Response(settings, forge.to_b64(xml))
    except Exception as exc:
        return Verdict("raises", f"{type(exc).__name__}: {exc}", exc)
    if response.is_valid(REQUEST_DATA, request_id=request_id):
        return Verdict("accepted", response.get_nameid() or "", response=response)
    return Verdict("refused", response.get_error() or "", response=response)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Case:
    """One row: how to forge it, and what bare python3-saml 1.16.0 does with it.

    ``expect`` is the NameID for "accepted", a substring of the error for "refused",
    and the exception class for "raises".
    """

    build: Callable[[Env], bytes]
    kind: Kind
    expect: str | type[BaseException]
    want_assertions_signed: bool = True
    request_id: str | None = None
    idp: Literal["idp", "ec_idp"] = "idp"


def spec(**changes: Any) -> ResponseSpec:
    return ResponseSpec(**changes)


def signed(env: Env, s: ResponseSpec | None = None, **options: Any) -> bytes:
    return forge.sign_spec(s or spec(), env.idp, **options)


def response_signed(env: Env) -> bytes:
    return signed(env, target="response")


def ago(seconds: int) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)


def xsw_of(n: int) -> Callable[[Env], bytes]:
    """XSW1/2 wrap a signed Response, XSW3-8 a signed Assertion."""
    return lambda e: forge.xsw(response_signed(e) if n <= 2 else signed(e), n)


#: An XSLT that throws its input away: the digest no longer depends on the document.
DISCARD_INPUT_XSLT = (
    b'<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0">'
    b'<xsl:template match="/"><nothing-to-see/></xsl:template></xsl:stylesheet>'
)

NOT_ONE_ASSERTION = "SAML Response must contain 1 assertion"
BAD_SIGNATURE = "Signature validation failed"
NOT_SIGNED = "The Assertion of the Response is not signed and the SP require it"
EVIL = forge.EVIL_NAME_ID

TABLE: dict[str, Case] = {
    # ---- valid responses
    "valid-assertion-signed": Case(lambda e: signed(e), "accepted", "E1001"),
    "valid-response-signed": Case(response_signed, "accepted", "E1001", False),
    "valid-both-signed": Case(lambda e: signed(e, target="both"), "accepted", "E1001"),
    "valid-no-keyinfo": Case(lambda e: signed(e, include_keyinfo=False), "accepted", "E1001"),
    "valid-encrypted": Case(
        lambda e: forge.encrypt_assertion(signed(e), e.sp.cert_pem), "accepted", "E1001"
    ),
    "valid-encrypted-aes256-gcm": Case(
        lambda e: forge.encrypt_assertion(signed(e), e.sp.cert_pem, data_alg=forge.AES256_GCM),
        "accepted",
        "E1001",
    ),
    "valid-ec-ecdsa-sha256": Case(
        lambda e: forge.sign_spec(spec(), e.ec_idp, sig_alg=forge.ECDSA_SHA256),
        "accepted",
        "E1001",
        idp="ec_idp",
    ),
    # ---- XML signature wrapping (SAMLRaider XSW1..8)
    **{
        f"xsw{n}": Case(xsw_of(n), "refused", NOT_ONE_ASSERTION, want_assertions_signed=n > 2)
        for n in range(1, 9)
    },
    # ---- signatures missing, empty, elsewhere, foreign, weak, stale
    "strip-signature": Case(lambda e: forge.strip_signature(signed(e)), "refused", NOT_SIGNED),
    "strip-signature-no-assertion-wanted": Case(
        lambda e: forge.strip_signature(signed(e)), "refused", "No Signature found", False
    ),
    "empty-signature-value": Case(
        lambda e: forge.empty_signature_value(signed(e)), "refused", BAD_SIGNATURE
    ),
    "empty-signature": Case(
        lambda e: forge.empty_signature(signed(e)),
        "refused",
        "Not match the saml-schema-protocol-2.0.xsd",
    ),
    "response-signed-only": Case(
        lambda e: forge.signature_on_other_element(spec(), e.idp), "refused", NOT_SIGNED
    ),
    "reference-elsewhere": Case(
        lambda e: forge.signature_on_other_element(spec(), e.idp, mode="reference_elsewhere"),
        "refused",
        "Found an invalid Signed Element",
        False,
    ),
    "replace-keyinfo": Case(
        lambda e: forge.replace_keyinfo(signed(e), e.attacker, evil_name_id=EVIL),
        "refused",
        BAD_SIGNATURE,
    ),
    "rsa-sha1": Case(
        lambda e: signed(e, sig_alg=forge.RSA_SHA1), "refused", "Deprecated signature algorithm"
    ),
    "digest-sha1": Case(
        lambda e: signed(e, digest_alg=forge.SHA1), "refused", "Deprecated digest algorithm"
    ),
    "name-id-changed-after-signing": Case(
        lambda e: forge.set_name_id(signed(e), EVIL), "refused", BAD_SIGNATURE
    ),
    # ---- comments, transforms
    "comment-in-name-id": Case(
        lambda e: forge.comment_in_name_id(spec(), e.idp), "accepted", "E1001.evil"
    ),
    "xpath-transform-signed": Case(
        lambda e: signed(e, transforms=[*forge.DEFAULT_TRANSFORMS, forge.xpath_transform()]),
        "accepted",
        "E1001",
    ),
    "xslt-transform-signed": Case(
        lambda e: signed(e, transforms=[*forge.DEFAULT_TRANSFORMS, forge.xslt_transform()]),
        "accepted",
        "E1001",
    ),
    "xslt-discarding-input-then-name-id-changed": Case(
        lambda e: forge.set_name_id(
            signed(
                e,
                transforms=[
                    *forge.DEFAULT_TRANSFORMS,
                    forge.xslt_transform(DISCARD_INPUT_XSLT),
                ],
            ),
            EVIL,
        ),
        "accepted",
        EVIL,
    ),
    "xslt-injected-after-signing": Case(
        lambda e: forge.inject_transform(signed(e), forge.xslt_transform()),
        "refused",
        BAD_SIGNATURE,
    ),
    # ---- DTDs
    "doctype-internal-entity": Case(
        lambda e: forge.with_doctype_entities(signed(e)), "raises", xmlparser.DTDForbidden
    ),
    "billion-laughs": Case(
        lambda e: forge.billion_laughs(signed(e)), "raises", etree.XMLSyntaxError
    ),
    "xxe-external-entity": Case(
        lambda e: forge.xxe_external((e.tmp / "secret.txt").as_uri(), signed(e)),
        "raises",
        xmlparser.DTDForbidden,
    ),
    # ---- attributes, encryption
    "duplicate-attribute": Case(
        lambda e: forge.duplicate_attribute(spec(), e.idp), "accepted", "E1001"
    ),
    "tamper-encrypted-data": Case(
        lambda e: forge.tamper_encrypted(forge.encrypt_assertion(signed(e), e.sp.cert_pem)),
        "raises",
        xmlsec.Error,
    ),
    "tamper-encrypted-key": Case(
        lambda e: forge.tamper_encrypted(
            forge.encrypt_assertion(signed(e), e.sp.cert_pem), which="key"
        ),
        "raises",
        xmlsec.Error,
    ),
    # ---- what the IdP put in (all signed properly)
    "no-audience-restriction": Case(lambda e: signed(e, spec(audience=None)), "accepted", "E1001"),
    "no-subject-confirmation-not-on-or-after": Case(
        lambda e: signed(e, spec(include_subject_confirmation_not_on_or_after=False)),
        "accepted",
        "E1001",
    ),
    "no-recipient": Case(lambda e: signed(e, spec(recipient=None)), "accepted", "E1001"),
    "recipient-containing-acs-url": Case(
        lambda e: signed(e, spec(recipient="https://evil.example/?" + forge.SP_ACS_URL)),
        "accepted",
        "E1001",
    ),
    "no-destination": Case(lambda e: signed(e, spec(destination=None)), "accepted", "E1001"),
    "destination-prefixed-by-acs-url": Case(
        lambda e: signed(e, spec(destination=forge.SP_ACS_URL + ".evil.example/")),
        "accepted",
        "E1001",
    ),
    "unsolicited-while-request-pending": Case(
        lambda e: signed(e), "accepted", "E1001", request_id="_pending-request"
    ),
    "in-response-to-other-request": Case(
        lambda e: signed(e, spec(in_response_to="_other-request")),
        "refused",
        "does not match the ID of the AuthNRequest",
        request_id="_pending-request",
    ),
    "expired": Case(lambda e: signed(e, spec(issue_instant=ago(3600))), "refused", "expired"),
    "not-yet-valid": Case(
        lambda e: signed(e, spec(not_before=ago(-600))), "refused", "not yet valid"
    ),
    "wrong-audience": Case(
        lambda e: signed(e, spec(audience=["https://other.example/sp"])),
        "refused",
        "is not a valid audience",
    ),
    "wrong-issuer": Case(
        lambda e: signed(e, spec(issuer="https://evil.example/idp")), "refused", "Invalid issuer"
    ),
    "status-responder": Case(
        lambda e: signed(e, spec(status=forge.STATUS_RESPONDER)),
        "refused",
        "was not Success",
    ),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_python3_saml_verdict(env: Env, name: str) -> None:
    case = TABLE[name]
    settings = sp_settings(
        getattr(env, case.idp), env.sp, want_assertions_signed=case.want_assertions_signed
    )
    verdict = judge(case.build(env), settings, request_id=case.request_id)

    assert verdict.kind == case.kind, verdict.detail
    if case.kind == "raises":
        assert isinstance(case.expect, type)
        assert isinstance(verdict.exception, case.expect), verdict.detail
    else:
        assert isinstance(case.expect, str)
        if case.kind == "accepted":
            assert verdict.detail == case.expect
        else:
            assert case.expect in verdict.detail


def test_the_module_docstring_lists_every_row() -> None:
    doc = forge.__doc__ or ""
    missing = [name for name in TABLE if name not in doc]
    assert not missing, f"rows missing from the table in saml_forge's docstring: {missing}"


# --------------------------------------------------------------------------- keys, spec


def test_keys_rsa_and_ec(env: Env) -> None:
    rsa_cert = x509.load_pem_x509_certificate(env.idp.cert_pem)
    public_key = rsa_cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 2048
    assert rsa_cert.signature_hash_algorithm is not None
    assert rsa_cert.signature_hash_algorithm.name == "sha256"
    assert rsa_cert.subject == rsa_cert.issuer
    assert b"BEGIN PRIVATE KEY" in env.idp.key_pem
    ec_cert = x509.load_pem_x509_certificate(env.ec_idp.cert_pem)
    assert isinstance(ec_cert.public_key(), ec.EllipticCurvePublicKey)
    assert base64.b64decode(env.idp.cert_b64) == rsa_cert.public_bytes(Encoding.DER)


def test_spec_defaults() -> None:
    s = ResponseSpec()
    assert s.not_before == s.issue_instant - dt.timedelta(seconds=60)
    assert s.not_on_or_after == s.issue_instant + dt.timedelta(seconds=300)
    assert s.sc_not_on_or_after == s.issue_instant + dt.timedelta(seconds=300)
    assert s.authn_instant == s.issue_instant
    assert s.name_id_format == forge.NAMEID_PERSISTENT
    assert s.status == forge.STATUS_SUCCESS
    for value in (s.response_id, s.assertion_id, s.session_index):
        assert value is not None
        assert value.startswith("_")
        assert len(value) == 41
    assert len({s.response_id, s.assertion_id, ResponseSpec().response_id}) == 3
    # replace() keeps the filled-in instants and IDs
    r = dataclasses.replace(s, name_id="E2002")
    assert (r.response_id, r.not_on_or_after) == (s.response_id, s.not_on_or_after)


def test_build_response_layout() -> None:
    s = ResponseSpec(
        in_response_to="_req-1",
        name_qualifier="https://idp.example.test",
        session_not_on_or_after=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
        status_message="fine",
    )
    root = forge.build_response(s)
    assert root.tag == f"{SAMLP}Response"
    assert root.nsmap == {"samlp": forge.NS_SAMLP, "saml": forge.NS_SAML}
    assert [c.tag for c in root] == [f"{SAML}Issuer", f"{SAMLP}Status", f"{SAML}Assertion"]
    assert root.get("ID") == s.response_id
    assert root.get("InResponseTo") == "_req-1"
    assert root.get("Destination") == forge.SP_ACS_URL
    assert root.get("IssueInstant") == forge.saml_instant(s.issue_instant)

    assertion = root[2]
    assert assertion.get("ID") == s.assertion_id
    assert b'<saml:Assertion xmlns:saml="' in forge.to_bytes(root), "Assertion is self-contained"
    assert [c.tag for c in assertion] == [
        f"{SAML}Issuer",
        f"{SAML}Subject",
        f"{SAML}Conditions",
        f"{SAML}AuthnStatement",
        f"{SAML}AttributeStatement",
    ]
    name_id = assertion.find(f"{SAML}Subject/{SAML}NameID")
    assert name_id is not None
    assert (name_id.text, name_id.get("Format"), name_id.get("NameQualifier")) == (
        "E1001",
        forge.NAMEID_PERSISTENT,
        "https://idp.example.test",
    )
    scd = assertion.find(f"{SAML}Subject/{SAML}SubjectConfirmation/{SAML}SubjectConfirmationData")
    assert scd is not None
    assert scd.getparent().get("Method") == forge.CM_BEARER
    assert s.sc_not_on_or_after is not None
    assert dict(scd.attrib) == {
        "InResponseTo": "_req-1",
        "NotOnOrAfter": forge.saml_instant(s.sc_not_on_or_after),
        "Recipient": forge.SP_ACS_URL,
    }
    audiences = assertion.findall(f"{SAML}Conditions/{SAML}AudienceRestriction/{SAML}Audience")
    assert [a.text for a in audiences] == [forge.SP_ENTITY_ID]
    authn = assertion.find(f"{SAML}AuthnStatement")
    assert authn is not None
    assert authn.get("SessionNotOnOrAfter") == "2030-01-01T00:00:00Z"
    attrs = assertion.findall(f"{SAML}AttributeStatement/{SAML}Attribute")
    assert (attrs[0].get("Name"), attrs[0].get("FriendlyName")) == (forge.ATTR_MAIL, "mail")
    assert [v.text for v in attrs[2]] == ["member", "staff"]
    # the schema python3-saml validates against in strict mode
    assert not isinstance(
        OneLogin_Saml2_XML.validate_xml(root, "saml-schema-protocol-2.0.xsd"), str
    )


def test_build_response_without_optional_parts() -> None:
    root = forge.build_response(
        ResponseSpec(audience=None, destination=None, include_response_issuer=False)
    )
    assert root.get("Destination") is None
    assert root.find(f"{SAML}Issuer") is None
    assert root.find(f".//{SAML}AudienceRestriction") is None
    assert root.find(f".//{SAML}Conditions") is not None


# --------------------------------------------------------------------------- signing


@pytest.mark.parametrize("target", ["assertion", "response"])
def test_signature_placement(env: Env, target: Literal["assertion", "response"]) -> None:
    xml = signed(env, target=target)
    root = etree.fromstring(xml)
    elem = root if target == "response" else root.find(f"{SAML}Assertion")
    assert elem is not None
    assert elem[0].tag == f"{SAML}Issuer"
    signature = elem[1]
    assert signature.tag == f"{DS}Signature", "Signature right after the Issuer"
    assert signature.prefix == "ds"
    info = signature.find(f"{DS}SignedInfo")
    assert info is not None
    algorithms = [n.get("Algorithm") for n in info.iter() if n.get("Algorithm")]
    assert algorithms == [
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        "http://www.w3.org/2001/04/xmlenc#sha256",
    ]
    reference = info.find(f"{DS}Reference")
    assert reference is not None
    assert reference.get("URI") == "#" + elem.get("ID", "")
    cert = signature.find(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate")
    assert cert is not None
    assert "".join((cert.text or "").split()) == env.idp.cert_b64
    assert forge.verify_signature(xml, env.idp.cert_pem, target=target)
    assert not forge.verify_signature(xml, env.attacker.cert_pem, target=target)


def test_sign_is_deterministic_and_pure(env: Env) -> None:
    s = ResponseSpec()
    element = forge.build_response(s)
    before = etree.tostring(element)
    first = forge.sign(element, env.idp.key_pem, env.idp.cert_pem)
    assert etree.tostring(element) == before, "the input element is not mutated"
    assert forge.sign(before, env.idp.key_pem, env.idp.cert_pem) == first
    assert forge.sign_spec(s, env.idp, target="both") == forge.sign_spec(s, env.idp, target="both")


def test_sign_refuses_to_sign_twice(env: Env) -> None:
    with pytest.raises(ValueError, match="already signed"):
        forge.sign(signed(env), env.idp.key_pem, env.idp.cert_pem)


def test_sign_without_keyinfo(env: Env) -> None:
    xml = signed(env, include_keyinfo=False)
    assert b"KeyInfo" not in xml
    assert forge.verify_signature(xml, env.idp.cert_pem)


def test_deprecated_algorithms_are_written(env: Env) -> None:
    xml = signed(env, sig_alg=forge.RSA_SHA1, digest_alg=forge.SHA1)
    assert b"http://www.w3.org/2000/09/xmldsig#rsa-sha1" in xml
    assert b"http://www.w3.org/2000/09/xmldsig#sha1" in xml
    assert forge.verify_signature(xml, env.idp.cert_pem)


def test_extra_transforms_sign_validly(env: Env) -> None:
    for transform in (forge.xpath_transform(), forge.xslt_transform()):
        xml = signed(env, transforms=[*forge.DEFAULT_TRANSFORMS, transform])
        assert transform.transform.href.encode() in xml
        assert forge.verify_signature(xml, env.idp.cert_pem)


def test_injected_transform_breaks_the_signature(env: Env) -> None:
    xml = forge.inject_transform(signed(env), forge.xslt_transform(), position=0)
    transforms = etree.fromstring(xml).findall(f".//{DS}Transform")
    assert transforms[0].get("Algorithm") == forge.XSLT.href
    assert transforms[0].find("{http://www.w3.org/1999/XSL/Transform}stylesheet") is not None
    assert not forge.verify_signature(xml, env.idp.cert_pem)


def test_python3_saml_runs_an_injected_xslt_before_checking_the_signature(
    env: Env, capfd: pytest.CaptureFixture[str]
) -> None:
    """The transforms of a Reference run before the SignatureValue is checked, so an
    attacker's stylesheet executes inside python3-saml. xmlsec's XSLT sandbox refuses
    file and network access (we see its refusal on stderr), which leaves CPU-bound
    stylesheets: the SP must refuse unknown transforms before calling the library."""
    secret = env.tmp / "xslt-target.xml"
    secret.write_text("<s>do not read</s>")
    stylesheet = (
        '<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0">'
        f'<xsl:template match="/"><r><xsl:value-of select="document(\'{secret.as_uri()}\')"/>'
        "</r></xsl:template></xsl:stylesheet>"
    ).encode()
    xml = forge.inject_transform(signed(env), forge.xslt_transform(stylesheet))
    capfd.readouterr()
    verdict = judge(xml, sp_settings(env.idp, env.sp))
    assert verdict.kind == "refused"
    assert BAD_SIGNATURE in verdict.detail
    err = capfd.readouterr().err
    assert f"Local file read for {secret.as_uri()} refused" in err


def test_signature_over_discarded_input_does_not_cover_the_name_id(env: Env) -> None:
    xml = signed(
        env, transforms=[*forge.DEFAULT_TRANSFORMS, forge.xslt_transform(DISCARD_INPUT_XSLT)]
    )
    assert forge.verify_signature(forge.set_name_id(xml, EVIL), env.idp.cert_pem)


# --------------------------------------------------------------------------- encryption


@pytest.mark.parametrize(
    ("alg", "href"),
    [
        (forge.AES128_CBC, "http://www.w3.org/2001/04/xmlenc#aes128-cbc"),
        (forge.AES256_GCM, "http://www.w3.org/2009/xmlenc11#aes256-gcm"),
    ],
)
def test_encrypt_assertion(env: Env, alg: Any, href: str) -> None:
    xml = forge.encrypt_assertion(signed(env), env.sp.cert_pem, data_alg=alg)
    root = etree.fromstring(xml)
    assert root.find(f"{SAML}Assertion") is None
    assert b"E1001" not in xml
    data = root.find(f"{SAML}EncryptedAssertion/{XENC}EncryptedData")
    assert data is not None
    assert data.get("Type") == "http://www.w3.org/2001/04/xmlenc#Element"
    method = data.find(f"{XENC}EncryptionMethod")
    assert method is not None
    assert method.get("Algorithm") == href
    key = data.find(f"{DS}KeyInfo/{XENC}EncryptedKey/{XENC}EncryptionMethod")
    assert key is not None
    assert key.get("Algorithm") == "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"
    verdict = judge(xml, sp_settings(env.idp, env.sp))
    assert verdict.kind == "accepted"
    assert verdict.response is not None
    assert verdict.response.get_attributes()[forge.ATTR_MAIL] == ["e1001@example.test"]


@pytest.mark.parametrize("which", ["data", "key"])
def test_tamper_encrypted_flips_one_bit(env: Env, which: Literal["data", "key"]) -> None:
    enc = forge.encrypt_assertion(signed(env), env.sp.cert_pem)
    tampered = forge.tamper_encrypted(enc, which=which)
    assert forge.tamper_encrypted(enc, which=which) == tampered

    def values(xml: bytes) -> list[bytes]:
        return [
            base64.b64decode("".join((n.text or "").split()))
            for n in etree.fromstring(xml).iter(f"{XENC}CipherValue")
        ]

    diffs = [
        bin(x ^ y).count("1")
        for a, b in zip(values(enc), values(tampered), strict=True)
        for x, y in zip(a, b, strict=True)
    ]
    assert sum(diffs) == 1


# --------------------------------------------------------------------------- XSW


def _assertion_ids(xml: bytes) -> list[str]:
    return [a.get("ID", "") for a in etree.fromstring(xml).iter(f"{SAML}Assertion")]


#: Which signatures bare xmlsec still finds valid after each wrapping (document order):
#: XSW2-XSW5 keep a verifiable signature; only the structural checks of the SAML
#: library stop them.
XSW_XMLSEC_ALONE = {
    1: [False],  # the original sits inside the Signature: the enveloped transform drops it
    2: [True],
    3: [True],
    4: [True],
    5: [True],
    6: [False],  # same as XSW1
    7: [False],  # duplicate ID: the reference resolves to the first (evil) copy
    8: [False],  # duplicate ID, same
}


@pytest.mark.parametrize("n", range(1, 9))
def test_xsw_shape(env: Env, n: int) -> None:
    base = response_signed(env) if n <= 2 else signed(env)
    original = etree.fromstring(base)
    xml = forge.xsw(base, n)
    root = etree.fromstring(xml)
    names = [x.text for x in root.iter(f"{SAML}NameID")]
    assert sorted(names) == sorted([EVIL, "E1001"]), names
    assert forge.verify_signatures(xml, env.idp.cert_pem) == XSW_XMLSEC_ALONE[n]
    assertion_id = original.find(f"{SAML}Assertion").get("ID")
    ids = _assertion_ids(xml)
    if n <= 2:
        assert root.get("ID") == forge.EVIL_RESPONSE_ID
        signature = root.find(f"{DS}Signature")
        assert signature is not None
        clone = signature.find(f"{SAMLP}Response") if n == 1 else signature.getprevious()
        assert clone is not None
        assert clone.tag == f"{SAMLP}Response"
        assert clone.get("ID") == original.get("ID")
        assert clone.find(f"{DS}Signature") is None
        assert ids == [assertion_id, assertion_id]
        return
    first = root.find(f"{SAML}Assertion")
    assert first is not None
    if n == 3:
        assert ids == [forge.EVIL_ASSERTION_ID, assertion_id]
        assert first.find(f".//{SAML}NameID").text == EVIL
    elif n == 4:
        assert ids == [forge.EVIL_ASSERTION_ID, assertion_id]
        assert root[-1].get("ID") == forge.EVIL_ASSERTION_ID
        inner = root[-1][-1]
        assert inner.get("ID") == assertion_id
        assert inner.find(f"{DS}Signature") is not None
    elif n == 5:
        assert ids == [forge.EVIL_ASSERTION_ID, assertion_id]
        assert first.find(f"{DS}Signature") is not None
        assert root[-1].get("ID") == assertion_id
    elif n == 6:
        assert ids == [forge.EVIL_ASSERTION_ID, assertion_id]
        inner = first.find(f"{DS}Signature/{SAML}Assertion")
        assert inner is not None
        assert inner.get("ID") == assertion_id
    elif n == 7:
        assert ids == [assertion_id, assertion_id]
        extensions = root.find("Extensions")
        assert extensions is not None
        assert extensions.getnext() is first
        assert extensions[0].find(f".//{SAML}NameID").text == EVIL
    else:
        assert ids == [assertion_id, assertion_id]
        inner = first.find(f"{DS}Signature/Object/{SAML}Assertion")
        assert inner is not None
        assert inner.find(f".//{SAML}NameID").text == "E1001"
        assert first.find(f"{SAML}Subject/{SAML}NameID").text == EVIL


def test_xsw_needs_the_right_signature(env: Env) -> None:
    with pytest.raises(ValueError, match="not signed"):
        forge.xsw(signed(env), 1)
    with pytest.raises(ValueError, match="not signed"):
        forge.xsw(response_signed(env), 3)
    with pytest.raises(ValueError):
        forge.xsw(signed(env), 9)


# --------------------------------------------------------------------------- other attacks


def test_strip_and_empty_signatures(env: Env) -> None:
    both = signed(env, target="both")
    assert b"Signature" not in forge.strip_signature(both)
    only_response = forge.strip_signature(both, target="assertion")
    assert forge.verify_signatures(only_response, env.idp.cert_pem) == [False]
    values = etree.fromstring(forge.empty_signature_value(both)).iter(f"{DS}SignatureValue")
    assert [v.text for v in values] == [None, None]
    empties = list(etree.fromstring(forge.empty_signature(both)).iter(f"{DS}Signature"))
    assert len(empties) == 2
    assert all(len(s) == 0 and not s.text for s in empties)


def test_reference_elsewhere_is_cryptographically_valid(env: Env) -> None:
    s = ResponseSpec()
    xml = forge.signature_on_other_element(s, env.idp, mode="reference_elsewhere")
    root = etree.fromstring(xml)
    reference = root.find(f"{SAML}Assertion/{DS}Signature/{DS}SignedInfo/{DS}Reference")
    assert reference is not None
    assert reference.get("URI") == "#" + s.response_id
    assert forge.verify_signatures(xml, env.idp.cert_pem) == [True]


def test_replace_keyinfo(env: Env) -> None:
    xml = forge.replace_keyinfo(signed(env, target="both"), env.attacker, evil_name_id=EVIL)
    assert forge.verify_signatures(xml, env.attacker.cert_pem) == [True, True]
    assert forge.verify_signatures(xml, env.idp.cert_pem) == [False, False]
    certs = etree.fromstring(xml).iter(f"{DS}X509Certificate")
    assert {"".join((c.text or "").split()) for c in certs} == {env.attacker.cert_b64}
    # an SP that trusted KeyInfo (python3-saml with no configured cert, by fingerprint of
    # the attacker's own cert, is the same mistake) would log the attacker in as EVIL
    assert [n.text for n in etree.fromstring(xml).iter(f"{SAML}NameID")] == [EVIL]


def test_comment_in_name_id(env: Env) -> None:
    xml = forge.comment_in_name_id(ResponseSpec(), env.idp)
    assert b">E1001<!---->.evil</saml:NameID>" in xml
    assert forge.verify_signature(xml, env.idp.cert_pem), "comments are not digested"
    name_id = etree.fromstring(xml).find(f".//{SAML}NameID")
    assert name_id is not None
    assert name_id.text == "E1001", "the trap: lxml .text stops at the comment"
    assert "".join(name_id.itertext()) == "E1001.evil"
    verdict = judge(xml, sp_settings(env.idp, env.sp))
    assert verdict.detail == "E1001.evil", "python3-saml parses with remove_comments"


def test_duplicate_attribute(env: Env) -> None:
    xml = forge.duplicate_attribute(ResponseSpec(), env.idp)
    names = [a.get("Name") for a in etree.fromstring(xml).iter(f"{SAML}Attribute")]
    assert names.count(forge.ATTR_MAIL) == 2
    verdict = judge(xml, sp_settings(env.idp, env.sp))
    assert verdict.kind == "accepted"
    assert verdict.response is not None
    with pytest.raises(OneLogin_Saml2_ValidationError, match="duplicated Name"):
        verdict.response.get_attributes()
    lenient = judge(xml, sp_settings(env.idp, env.sp, allowRepeatAttributeName=True))
    assert lenient.response is not None
    assert lenient.response.get_attributes()[forge.ATTR_MAIL] == ["e1001@example.test", "admin"]


def test_doctype_entities_keep_the_signature_valid(env: Env) -> None:
    xml = forge.with_doctype_entities(response_signed(env))
    assert xml.startswith(b"<!DOCTYPE samlp:Response [<!ENTITY dest ")
    assert b'Destination="&dest;"' in xml
    expanded = etree.fromstring(xml, etree.XMLParser(resolve_entities=True, no_network=True))
    assert expanded.get("Destination") == forge.SP_ACS_URL
    assert forge.verify_signature(expanded, env.idp.cert_pem, target="response")


def test_billion_laughs_shape() -> None:
    default = forge.billion_laughs()
    assert default.count(b"<!ENTITY lol") == 10
    assert b"<saml:NameID" in default
    assert b">&lol9;</saml:NameID>" in default
    small = forge.billion_laughs(depth=3, width=2)
    root = etree.fromstring(small, etree.XMLParser(resolve_entities=True))
    name_id = root.find(f".//{SAML}NameID")
    assert name_id is not None
    assert name_id.text == "lol" * 4


def test_xxe_payload_reads_the_file_only_with_a_lenient_parser(env: Env) -> None:
    secret = env.tmp / "secret.txt"
    secret.write_text("TOP-SECRET")
    xml = forge.xxe_external(secret.as_uri())
    assert f'<!ENTITY xxe SYSTEM "{secret.as_uri()}">'.encode() in xml
    lenient = etree.fromstring(xml, etree.XMLParser(resolve_entities=True, no_network=True))
    assert lenient.find(f".//{SAML}NameID").text == "TOP-SECRET"
    # python3-saml's own parser, even with its DTD ban off, leaves the entity unresolved
    own = xmlparser.fromstring(xml, forbid_dtd=False, forbid_entities=False)
    assert "TOP-SECRET" not in etree.tostring(own).decode()


def test_to_b64_round_trips(env: Env) -> None:
    xml = signed(env)
    assert base64.b64decode(forge.to_b64(xml)) == xml
    assert base64.b64decode(forge.to_b64(xml.decode())) == xml
