"""The python3-saml speed-ups give the library's own answers (saml_xml's hot spots).

Every SAML test runs with them installed; these compare them with the library as
released, input by input.
"""

from __future__ import annotations

import random
import threading

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


def test_random_instants_read_as_the_library_reads_them() -> None:
    # Differential: mutations of a valid instant, each read by both; same value, or both
    # refuse.
    rng = random.Random(20261128)
    alphabet = "0123456789-:.TZtz +\n\u0660\uff11"
    base = "2026-11-28T10:00:00.25Z"
    for _ in range(3000):
        chars = list(base)
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(chars) + 1)
            action = rng.choice(("replace", "insert", "delete"))
            if action == "insert" or not chars:
                chars.insert(position, rng.choice(alphabet))
            elif action == "replace":
                chars[min(position, len(chars) - 1)] = rng.choice(alphabet)
            else:
                del chars[min(position, len(chars) - 1)]
        value = "".join(chars)
        try:
            with saml_xml.library_as_shipped():
                expected: object = OneLogin_Saml2_Utils.parse_SAML_to_time(value)
        except Exception:
            expected = "refused"
        try:
            got: object = OneLogin_Saml2_Utils.parse_SAML_to_time(value)
        except Exception:
            got = "refused"
        assert got == expected, value


def test_the_query_cache_is_bounded() -> None:
    # In a thread of its own: the cache is per thread, and this one is left full.
    root = forge.parse(forge.build_response(forge.ResponseSpec()))
    sizes: list[int] = []

    def many_queries() -> None:
        for n in range(saml_xml.MAX_CACHED_QUERIES + 50):
            assert OneLogin_Saml2_XML.query(root, f"//*[@ID='made-up-{n}']") == []
        sizes.append(len(saml_xml._thread_cache("xpaths")))

    thread = threading.Thread(target=many_queries)
    thread.start()
    thread.join()
    assert sizes == [saml_xml.MAX_CACHED_QUERIES]


def test_library_as_shipped_nests() -> None:
    sped_up = OneLogin_Saml2_XML.query
    with saml_xml.library_as_shipped():
        with saml_xml.library_as_shipped():
            pass
        assert OneLogin_Saml2_XML.query is not sped_up  # the outer block still holds
    assert OneLogin_Saml2_XML.query is sped_up
