"""Checks on a SAML message's XML that run before python3-saml and xmlsec see it.

python3-saml leaves some decisions to the application, and xmlsec will run any
transform a signature names. Everything here refuses what no honest IdP sends:
DTDs and entities, comments (the NameID comment-truncation attack), more than
one assertion anywhere in the document (signature wrapping), signatures in
unexpected places, and transforms or algorithms outside a short allow-list
(python3-saml issue #447: XSLT and XPath transforms are otherwise executed).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from lxml import etree
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from onelogin.saml2.xml_utils import OneLogin_Saml2_XML

from .. import errors

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "xenc": "http://www.w3.org/2001/04/xmlenc#",
}
SAMLP = "{urn:oasis:names:tc:SAML:2.0:protocol}"
SAML = "{urn:oasis:names:tc:SAML:2.0:assertion}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"

EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
# The only transforms a SAML signature needs (SAML core §5.4.4): enveloped-signature and
# exclusive canonicalisation. Anything else (XSLT, XPath, base64, inclusive c14n) is refused
# before xmlsec could execute it.
ALLOWED_TRANSFORMS = frozenset(
    {
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        EXC_C14N,
        EXC_C14N + "WithComments",
    }
)
ALLOWED_C14N = frozenset({EXC_C14N, EXC_C14N + "WithComments"})
# SHA-1 based methods are deprecated (python3-saml accepts them unless told otherwise).
ALLOWED_SIGNATURE_METHODS = frozenset(
    {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
    }
)
ALLOWED_DATA_ENCRYPTION = frozenset(
    [f"http://www.w3.org/2001/04/xmlenc#aes{n}-cbc" for n in (128, 192, 256)]
    + [f"http://www.w3.org/2009/xmlenc11#aes{n}-gcm" for n in (128, 192, 256)]
)
ALLOWED_KEY_TRANSPORT = frozenset(
    {"http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p", "http://www.w3.org/2009/xmlenc11#rsa-oaep"}
)
ALLOWED_DIGESTS = frozenset(
    {
        "http://www.w3.org/2001/04/xmlenc#sha256",
        "http://www.w3.org/2001/04/xmldsig-more#sha384",
        "http://www.w3.org/2001/04/xmlenc#sha512",
    }
)
DOCTYPE = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)
# SAML time values are UTC (SAML core 1.3.3). The optional "Z" and fraction are what
# python3-saml parses; an offset such as "+05:00" it cannot parse (a 500), and read
# naively it would shift the instant by hours.
INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z?", re.ASCII)
INSTANT_ATTRIBUTES = (
    "IssueInstant",
    "NotBefore",
    "NotOnOrAfter",
    "AuthnInstant",
    "SessionNotOnOrAfter",
)
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=False,
    remove_pis=False,
)


def decode(value: str, max_bytes: int) -> bytes:
    """The XML of a base64 SAMLResponse field, refused when over ``max_bytes``."""
    if not value:
        raise errors.SamlMissing("no SAMLResponse in the request")
    # base64 inflates by 4/3: refuse before decoding anything that cannot fit.
    if len(value) > (max_bytes * 4) // 3 + 8:
        raise errors.SamlTooLarge(f"SAMLResponse over {max_bytes} bytes")
    try:
        xml = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise errors.SamlMalformed("SAMLResponse is not base64") from None
    if len(xml) > max_bytes:
        raise errors.SamlTooLarge(f"SAMLResponse over {max_bytes} bytes")
    return xml


# A logout message by redirect is small; this bounds what its deflate can expand to.
MAX_INFLATED_BYTES = 64 * 1024


def inflate(value: str, max_bytes: int = MAX_INFLATED_BYTES) -> bytes:
    """The XML of a SAMLRequest/SAMLResponse query parameter (HTTP-Redirect binding).

    Inflated with a bound before anything else touches it: deflate reaches ratios of
    about 1000:1, so an 8 KiB URL could otherwise become megabytes of XML.
    """
    try:
        compressed = base64.b64decode(value, validate=False)
        inflater = zlib.decompressobj(-15)
        xml = inflater.decompress(compressed, max_bytes + 1)
    except (binascii.Error, ValueError, zlib.error):
        raise errors.SamlMalformed("the message is not base64 of raw deflate") from None
    if len(xml) > max_bytes or inflater.unconsumed_tail:
        raise errors.SamlTooLarge(f"the inflated message is over {max_bytes} bytes")
    return xml


def parse(xml: bytes) -> Any:
    """Parse a SAML message, refusing DTDs, entities, comments and processing instructions."""
    if DOCTYPE.search(xml):
        raise errors.SamlXmlForbidden("the message carries a DTD or an entity declaration")
    try:
        root = etree.fromstring(xml, _PARSER)
    except etree.XMLSyntaxError as exc:
        if "entit" in str(exc).lower():
            # An entity bomb in an encoding the byte search does not read (UTF-16):
            # libxml2 stops it at its amplification limit, before anything is expanded.
            raise errors.SamlXmlForbidden("the message carries entities") from None
        raise errors.SamlMalformed("the message is not well-formed XML") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        # The byte search above misses a DTD in another encoding (UTF-16 with a BOM); the
        # parser saw it, without loading or expanding anything.
        raise errors.SamlXmlForbidden("the message carries a DTD")
    for node in root.iter(etree.Comment, etree.ProcessingInstruction):
        # A comment inside a NameID survives exclusive canonicalisation unsigned, and text
        # extraction may stop at it (CVE-2017-11427): "ada@x.com<!---->.evil" reads as
        # "ada@x.com". IdPs never send comments, so none are accepted anywhere.
        kind = "comment" if isinstance(node, etree._Comment) else "processing instruction"
        raise errors.SamlXmlForbidden(f"the message carries a {kind}")
    return root


def check_response_structure(root: Any) -> None:
    """One assertion, in the one place the protocol puts it; signatures only where expected."""
    if root.tag != SAMLP + "Response":
        raise errors.SamlMalformed(f"expected a samlp:Response, got {etree.QName(root).localname}")
    status = root.xpath("samlp:Status/samlp:StatusCode/@Value", namespaces=NS)
    if status and status[0] != STATUS_SUCCESS:
        # An IdP that did not sign the person in (cancelled, failed) sends no assertion:
        # name that, rather than "signature wrapping" for the missing assertion. An unsigned
        # status can only make this refuse, never accept.
        detail = root.xpath("samlp:Status//samlp:StatusCode/@Value", namespaces=NS)
        raise errors.SamlStatusNotSuccess(f"status {' / '.join(detail)}")
    assertions = root.xpath("//saml:Assertion | //saml:EncryptedAssertion", namespaces=NS)
    direct = root.xpath("saml:Assertion | saml:EncryptedAssertion", namespaces=NS)
    if len(assertions) != 1 or len(direct) != 1:
        # An extra assertion anywhere (in Extensions, inside a Signature's Object, nested in
        # another assertion) is the shape of every signature-wrapping attack.
        raise errors.SamlSignatureWrapping(
            f"{len(assertions)} assertions in the document, {len(direct)} where expected"
        )
    check_signatures(root, allowed_parents=(SAMLP + "Response", SAML + "Assertion"))
    check_encryption(root)
    check_instants(root)


def check_instants(root: Any) -> None:
    """Every SAML time value in UTC, and a real date, as python3-saml and ``_instant`` read it."""
    for element in root.iter(etree.Element):
        for name in INSTANT_ATTRIBUTES:
            value = element.get(name)
            if value is None:
                continue
            try:
                # "T24:00:00Z" is a valid xs:dateTime but no datetime: python3-saml would
                # raise on it inside is_valid, before checking any signature.
                utc_seconds(value)
            except ValueError:
                raise errors.SamlMalformed(f"{name}={value[:40]!r} is not a UTC instant") from None


def check_encryption(root: Any) -> None:
    """Encrypted content only inline, with current algorithms, before anything decrypts it.

    python3-saml decrypts in its Response constructor, before any signature check, and
    xmlsec follows a CipherReference or RetrievalMethod URI wherever it points: a
    `file:///dev/zero` would exhaust memory, a local file would be read. IdPs put the
    ciphertext inline, so references are refused, as are deprecated algorithms (RSA
    PKCS#1 v1.5 key transport is open to Bleichenbacher's attack).
    """
    for node in root.xpath("//xenc:CipherReference | //xenc:Transforms", namespaces=NS):
        raise errors.SamlDecryptionFailed(f"{etree.QName(node).localname} in encrypted data")
    for node in root.xpath("//ds:RetrievalMethod", namespaces=NS):
        if not (node.get("URI") or "").startswith("#") or len(node):
            raise errors.SamlDecryptionFailed("a RetrievalMethod pointing outside the message")
    for algorithm in root.xpath(
        "//xenc:EncryptedData/xenc:EncryptionMethod/@Algorithm", namespaces=NS
    ):
        if algorithm not in ALLOWED_DATA_ENCRYPTION:
            raise errors.SamlAlgorithmForbidden(f"data encryption {algorithm} is not allowed")
    for algorithm in root.xpath(
        "//xenc:EncryptedKey/xenc:EncryptionMethod/@Algorithm", namespaces=NS
    ):
        if algorithm not in ALLOWED_KEY_TRANSPORT:
            raise errors.SamlAlgorithmForbidden(f"key transport {algorithm} is not allowed")


def refuse_comments(root: Any) -> None:
    """No comment or processing instruction (see ``parse``), for an already parsed tree."""
    if root.xpath("//comment() | //processing-instruction()"):
        raise errors.SamlXmlForbidden("the decrypted assertion carries a comment or PI")


def check_signatures(root: Any, allowed_parents: tuple[str, ...]) -> None:
    """Every ds:Signature: in an allowed place, referencing its own parent, with allowed methods."""
    ids: dict[str, Any] = {}
    for element in root.iter():
        element_id = element.get("ID")
        if element_id is not None:
            if element_id in ids:
                raise errors.SamlSignatureWrapping(f"the ID {element_id!r} appears twice")
            ids[element_id] = element
    for signature in root.iter(DS + "Signature"):
        parent = signature.getparent()
        if parent is None or parent.tag not in allowed_parents:
            raise errors.SamlSignatureWrapping("a signature sits outside the signed element")
        _check_signed_info(signature, parent)


def _check_signed_info(signature: Any, parent: Any) -> None:
    if len(signature.xpath("ds:SignedInfo", namespaces=NS)) != 1:
        # An empty <ds:Signature/> signs nothing; without this it would read as a
        # forbidden canonicalisation (no CanonicalizationMethod at all).
        raise errors.SamlSignatureInvalid("a signature without exactly one SignedInfo")
    c14n = signature.xpath("ds:SignedInfo/ds:CanonicalizationMethod/@Algorithm", namespaces=NS)
    method = signature.xpath("ds:SignedInfo/ds:SignatureMethod/@Algorithm", namespaces=NS)
    references = signature.xpath("ds:SignedInfo/ds:Reference", namespaces=NS)
    if len(c14n) != 1 or c14n[0] not in ALLOWED_C14N:
        raise errors.SamlTransformForbidden(f"canonicalisation {c14n} is not allowed")
    if len(method) != 1 or method[0] not in ALLOWED_SIGNATURE_METHODS:
        raise errors.SamlAlgorithmForbidden(f"signature method {method} is not allowed")
    if len(references) != 1:
        raise errors.SamlSignatureWrapping(f"a signature with {len(references)} references")
    reference = references[0]
    if reference.get("URI") != "#" + (parent.get("ID") or "\0"):
        raise errors.SamlSignatureWrapping("the signature does not reference its own element")
    for transform in reference.xpath("ds:Transforms/ds:Transform", namespaces=NS):
        algorithm = transform.get("Algorithm")
        if algorithm not in ALLOWED_TRANSFORMS or not _plain_parameters(transform, algorithm):
            raise errors.SamlTransformForbidden(f"transform {algorithm!r} is not allowed")
    digest = reference.xpath("ds:DigestMethod/@Algorithm", namespaces=NS)
    if len(digest) != 1 or digest[0] not in ALLOWED_DIGESTS:
        raise errors.SamlAlgorithmForbidden(f"digest method {digest} is not allowed")


def _plain_parameters(transform: Any, algorithm: str) -> bool:
    """A transform takes no parameters, except exclusive c14n's InclusiveNamespaces.

    Okta and OpenSAML-based IdPs send `<ec:InclusiveNamespaces PrefixList="xs"/>` when
    attribute values are typed; it only names namespace prefixes to keep. Anything
    else inside a Transform (an XPath expression, a stylesheet) is code to run.
    """
    children = list(transform)
    if not children:
        return True
    return algorithm in ALLOWED_C14N and all(
        child.tag == f"{{{EXC_C14N}}}InclusiveNamespaces" and not len(child) for child in children
    )


# -- python3-saml's hot spots, done once instead of per message ---------------------------
#
# The library recompiles the protocol schema and every XPath expression for each response,
# and parses every instant with strptime: together more than its signature check. Each
# replacement below gives the library's own answer for every input; `library_as_shipped`
# puts the originals back (the benchmarks' baseline).

_compiled = threading.local()
MAX_CACHED_QUERIES = 256


def _thread_cache(name: str) -> dict[Any, Any]:
    # lxml's schema and XPath objects are not to be shared across threads: one per thread.
    cache = getattr(_compiled, name, None)
    if cache is None:
        cache = {}
        setattr(_compiled, name, cache)
    return cache


def _cached_validate_xml(xml: Any, schema: str, debug: bool = False) -> Any:
    """python3-saml's validate_xml with the XSD compiled once per thread, not per message."""
    import os

    from onelogin.saml2 import xml_utils

    cache = _thread_cache("schemas")
    compiled = cache.get(schema)
    if compiled is None:
        path = os.path.join(os.path.dirname(xml_utils.__file__), "schemas", schema)
        with open(path, "rb") as handle:
            compiled = cache[schema] = OneLogin_Saml2_XML._schema_class(etree.parse(handle))
    try:
        xml = OneLogin_Saml2_XML.to_etree(xml)
    except Exception:
        return "unloaded_xml"
    if not compiled.validate(xml):
        return "invalid_xml"
    return xml


def _cached_query(dom: Any, query: str, context: Any = None, tagid: str | None = None) -> Any:
    """python3-saml's query with each XPath expression compiled once per thread
    (about 45 queries per response, each compiled anew by the library)."""
    cache = _thread_cache("xpaths")
    compiled = cache.get(query)
    if compiled is None:
        compiled = etree.XPath(query, namespaces=OneLogin_Saml2_Constants.NSMAP)
        # python3-saml's queries are constants (message data travels in `tagid`), about
        # 60 of them; the bound keeps a future release that formats message text into a
        # query from growing the cache without limit.
        if len(cache) < MAX_CACHED_QUERIES:
            cache[query] = compiled
    source = dom if context is None else context
    return compiled(source) if tagid is None else compiled(source, tagid=tagid)


def utc_seconds(value: str) -> int:
    """Seconds since the epoch of a SAML instant (``INSTANT``), the sub-second part ignored;
    ValueError unless it is a real date and time. Its fields are at fixed places, so they
    are read directly rather than by strptime, which costs more than the rest of a check."""
    if not INSTANT.fullmatch(value):
        raise ValueError(value)
    moment = datetime(
        int(value[0:4]),
        int(value[5:7]),
        int(value[8:10]),
        int(value[11:13]),
        int(value[14:16]),
        int(value[17:19]),
    )
    return calendar.timegm(moment.timetuple())


def _parse_saml_to_time(timestr: str) -> int:
    """python3-saml's parse_SAML_to_time: the fast reading where it applies, else theirs."""
    try:
        return utc_seconds(timestr)
    except (ValueError, TypeError):
        return int(_ORIGINALS[OneLogin_Saml2_Utils, "parse_SAML_to_time"](timestr))


_SPEEDUPS: tuple[tuple[type, str, Any], ...] = (
    (OneLogin_Saml2_XML, "validate_xml", _cached_validate_xml),
    (OneLogin_Saml2_XML, "query", _cached_query),
    (OneLogin_Saml2_Utils, "parse_SAML_to_time", _parse_saml_to_time),
)
_ORIGINALS: dict[tuple[type, str], Any] = {
    (owner, name): getattr(owner, name) for owner, name, _ in _SPEEDUPS
}


def install_speedups() -> None:
    """Put the replacements above into python3-saml (idempotent)."""
    for owner, name, replacement in _SPEEDUPS:
        setattr(owner, name, staticmethod(replacement))


@contextmanager
def library_as_shipped() -> Iterator[None]:
    """python3-saml exactly as released while the block runs, for benchmarks and tests.

    It changes the library for the whole process: never in the server.
    """
    current = {(owner, name): owner.__dict__[name] for owner, name, _ in _SPEEDUPS}
    for (owner, name), original in _ORIGINALS.items():
        setattr(owner, name, staticmethod(original))
    try:
        yield
    finally:
        for (owner, name), before in current.items():
            setattr(owner, name, before)
