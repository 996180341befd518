"""The python3-saml speed-ups give the library's own answers (saml_xml's hot spots).

Every SAML test runs with them installed; these compare them with the library as
released, input by input.
"""

from __future__ import annotations

import pytest
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from onelogin.saml2.xml_utils import OneLogin_Saml2_XML

from sso_bridge.connectors import (
    saml,  # noqa: F401 - installs the speed-ups
    saml_xml,
)
from tests import saml_forge as forge

INSTANTS = [
    "2026-11-28T10:00:00Z",
    "2026-11-28T10:00:00.5Z",
    "2026-11-28T10:00:00.123456Z",
    "2026-11-28T10:00:00.1234567891Z",  # more digits than %f takes
    "2026-11-28T10:00:00",  # no Z: the library reads it as UTC
    "2028-02-29T23:59:59Z",
    "1970-01-01T00:00:00Z",
]
NOT_INSTANTS = [
    "2026-11-28T24:00:00Z",  # valid xs:dateTime, no datetime
    "2026-02-30T10:00:00Z",
    "2026-13-01T10:00:00Z",
    "0000-01-01T00:00:00Z",
    "2026-11-28 10:00:00Z",
    "2026-11-28T10:00:00+02:00",
    "",
]


@pytest.mark.parametrize("value", INSTANTS)
def test_instants_read_as_the_library_reads_them(value: str) -> None:
    with saml_xml.library_as_shipped():
        expected = OneLogin_Saml2_Utils.parse_SAML_to_time(value)
    assert OneLogin_Saml2_Utils.parse_SAML_to_time(value) == expected
    assert saml_xml.utc_seconds(value) == expected


@pytest.mark.parametrize("value", NOT_INSTANTS)
def test_what_is_no_instant_is_refused_as_by_the_library(value: str) -> None:
    with pytest.raises(ValueError):
        saml_xml.utc_seconds(value)
    with saml_xml.library_as_shipped(), pytest.raises(Exception):  # noqa: B017
        OneLogin_Saml2_Utils.parse_SAML_to_time(value)
    with pytest.raises(Exception):  # noqa: B017
        OneLogin_Saml2_Utils.parse_SAML_to_time(value)


def test_compiled_queries_find_what_the_library_finds() -> None:
    keys = forge.TestKeys.generate()
    root = forge.parse(forge.sign_spec(forge.ResponseSpec(), keys, target="both"))
    assertion_id = root.find(".//{urn:oasis:names:tc:SAML:2.0:assertion}Assertion").get("ID")
    # Queries of the kinds python3-saml's response.py makes, with and without a variable.
    queries = [
        ("/samlp:Response", None),
        ("/samlp:Response/saml:Assertion", None),
        ("/samlp:Response/ds:Signature", None),
        ("/samlp:Response/saml:Assertion/ds:Signature", None),
        ("//saml:Attribute", None),
        ("//*[@ID=$tagid]", assertion_id),
        ("/samlp:Response/saml:Assertion[@ID=$tagid]/ds:Signature", assertion_id),
    ]
    for query, tagid in queries:
        found = OneLogin_Saml2_XML.query(root, query, tagid=tagid)
        with saml_xml.library_as_shipped():
            expected = OneLogin_Saml2_XML.query(root, query, tagid=tagid)
        assert found and found == expected, query


def test_the_library_as_shipped_is_put_back_and_then_sped_up_again() -> None:
    sped_up = OneLogin_Saml2_XML.query
    with saml_xml.library_as_shipped():
        assert OneLogin_Saml2_XML.query is not sped_up
        assert OneLogin_Saml2_XML.query.__module__ == "onelogin.saml2.xml_utils"
    assert OneLogin_Saml2_XML.query is sped_up
