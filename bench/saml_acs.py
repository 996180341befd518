"""SAML ACS validation cost: the bridge's connector beside bare python3-saml, same run.

Run: `.venv/bin/python bench/saml_acs.py [--n 300]`. In-process, single thread,
no HTTP: it measures what one login's validation costs on this machine.

- bridge: `SamlConnector.complete()`, every check of the connector (XML pre-checks,
  python3-saml's validation, the exact checks, the replay cache in memory,
  the attribute mapping);
- python3-saml, as its demo Flask app does it: settings built from a dict and
  `OneLogin_Saml2_Auth.process_response()` for every response;
- python3-saml with its settings object built once, for the library's own floor;
- pysaml2's service provider with its default validation: config and client built
  once, `Saml2Client.parse_authn_request_response()` for every response. pysaml2
  verifies each signature by running the `xmlsec1` program (Debian's `xmlsec1`,
  pysaml2 from the `bench` extra), so it gets fewer responses per round than the
  others (a tenth, at least 10); "sso-bridge vs pysaml2" is pysaml2's median over
  the bridge's (above 1: the bridge is faster).

Every scenario validates freshly signed responses of the same kind (signed before
the clock starts), in interleaved rounds so drift on a shared machine hits all alike.
pysaml2 checks the forge's instants with no clock slack (its default): they pass,
since NotBefore is a minute before signing and the NotOnOrAfters five minutes after.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from saml2 import BINDING_HTTP_POST
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.sigver import get_xmlsec_binary

from sso_bridge.connectors import saml_xml
from sso_bridge.connectors.saml import SamlConnector
from sso_bridge.settings import SamlConnection
from sso_bridge.state import MemoryStore
from tests import saml_forge as forge

BASE_URL = "http://127.0.0.1:9"
REQUEST = {
    "https": "off",
    "http_host": "127.0.0.1:9",
    "script_name": "/saml/t/acs",
    "get_data": {},
}


def idp_metadata(cert_b64: str) -> str:
    return f"""<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"
    entityID="{forge.IDP_ENTITY_ID}">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
      <ds:X509Data><ds:X509Certificate>{cert_b64}</ds:X509Certificate></ds:X509Data>
    </ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
        Location="https://idp.example.test/sso"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"""


def library_settings(cert_b64: str) -> dict[str, Any]:
    """The settings dict a python3-saml app writes (strict, assertions signed)."""
    return {
        "strict": True,
        "sp": {
            "entityId": forge.SP_ENTITY_ID,
            "assertionConsumerService": {"url": forge.SP_ACS_URL},
        },
        "idp": {
            "entityId": forge.IDP_ENTITY_ID,
            "singleSignOnService": {"url": "https://idp.example.test/sso"},
            "x509cert": cert_b64,
        },
        "security": {"wantAssertionsSigned": True, "rejectDeprecatedAlgorithm": True},
    }


def pysaml2_client(idp_metadata_file: Path, *, want_response_signed: bool) -> Saml2Client:
    """A pysaml2 SP for the forge's test SP, trusting the IdP metadata the bench wrote."""
    config = SPConfig().load(
        {
            "entityid": forge.SP_ENTITY_ID,
            "service": {
                "sp": {
                    "endpoints": {
                        "assertion_consumer_service": [(forge.SP_ACS_URL, BINDING_HTTP_POST)]
                    },
                    "allow_unsolicited": True,
                    "want_assertions_signed": True,
                    "want_response_signed": want_response_signed,
                }
            },
            "metadata": {"local": [str(idp_metadata_file)]},
            "xmlsec_binary": get_xmlsec_binary(),
        }
    )
    return Saml2Client(config)


def responses(keys: forge.KeyPair, n: int, target: str) -> list[str]:
    base = forge.ResponseSpec()
    return [
        forge.to_b64(
            forge.sign_spec(
                replace(base, response_id=forge.new_id(), assertion_id=forge.new_id()),
                keys,
                target=target,
            )
        )
        for _ in range(n)
    ]


def measure(name: str, run: Callable[[str], object], batch: list[str]) -> list[float]:
    timings = []
    for value in batch:
        start = time.perf_counter()
        run(value)
        timings.append(time.perf_counter() - start)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="responses per scenario")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    keys = forge.TestKeys.generate()
    cert_b64 = keys.cert_b64
    tmp = Path(tempfile.mkdtemp())
    (tmp / "idp.xml").write_text(idp_metadata(cert_b64))
    connection = SamlConnection(
        type="saml", idp_metadata_file=tmp / "idp.xml", allow_unsolicited=True
    )
    connector = SamlConnector("t", connection, BASE_URL, MemoryStore(), tmp / "var")
    settings_dict = library_settings(cert_b64)
    prebuilt = OneLogin_Saml2_Settings(settings_dict)
    client = pysaml2_client(tmp / "idp.xml", want_response_signed=False)

    def bridge(value: str) -> object:
        return connector.complete({"SAMLResponse": value})

    # Importing the connector installs its speed-ups into python3-saml (compiled schema
    # and XPath, fast instants); the bare library's baselines run on the library as
    # released.
    def bare(run: Callable[[str], object]) -> Callable[[str], object]:
        def wrapped(value: str) -> object:
            with saml_xml.library_as_shipped():
                return run(value)

        return wrapped

    @bare
    def naive(value: str) -> object:
        auth = OneLogin_Saml2_Auth({**REQUEST, "post_data": {"SAMLResponse": value}}, settings_dict)
        auth.process_response()
        assert not auth.get_errors(), auth.get_last_error_reason()
        return auth

    @bare
    def floor(value: str) -> object:
        auth = OneLogin_Saml2_Auth(
            {**REQUEST, "post_data": {"SAMLResponse": value}}, old_settings=prebuilt
        )
        auth.process_response()
        assert not auth.get_errors(), auth.get_last_error_reason()
        return auth

    def pysaml2(value: str) -> object:
        response = client.parse_authn_request_response(value, BINDING_HTTP_POST)
        assert response is not None
        assert response.get_identity()
        return response

    bridge_name = "sso-bridge SamlConnector.complete"
    pysaml2_name = "pysaml2 SP, default validation"
    scenarios: dict[str, Callable[[str], object]] = {
        "python3-saml, as its demo app (settings per request)": naive,
        "python3-saml, settings built once": floor,
        bridge_name: bridge,
        pysaml2_name: pysaml2,
    }
    for target in ("assertion", "response"):
        if target == "response":
            connection = connection.model_copy(update={"want_response_signed": True})
            connector = SamlConnector("t", connection, BASE_URL, MemoryStore(), tmp / "var")
            settings_dict["security"]["wantMessagesSigned"] = True
            settings_dict["security"]["wantAssertionsSigned"] = False
            prebuilt = OneLogin_Saml2_Settings(settings_dict)
            client = pysaml2_client(tmp / "idp.xml", want_response_signed=True)
        signed_as = "both" if target == "response" else "assertion"
        per = max(1, args.n // args.rounds)
        # xmlsec1 runs as a subprocess per signature: a tenth as many, at least 10.
        counts = {name: per for name in scenarios}
        counts[pysaml2_name] = max(10, per // 10)
        results: dict[str, list[float]] = {name: [] for name in scenarios}
        for _ in range(args.rounds):
            for name, run in scenarios.items():
                results[name] += measure(name, run, responses(keys, counts[name], signed_as))
        print(f"\nsigned: {'assertion and response' if target == 'response' else 'assertion'}")
        print(f"{'scenario':<56} {'n':>5} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>7}")
        baseline = statistics.median(results[next(iter(scenarios))])
        for name, timings in results.items():
            timings.sort()
            p50 = statistics.median(timings)
            p99 = timings[max(0, int(len(timings) * 0.99) - 1)]
            print(
                f"{name:<56} {len(timings):5d} {1 / p50:8.0f} {p50 * 1000:8.2f}"
                f" {p99 * 1000:8.2f} {baseline / p50:6.2f}x"
            )
        vs = statistics.median(results[pysaml2_name]) / statistics.median(results[bridge_name])
        print(f"sso-bridge vs pysaml2: {vs:.2f}x")


if __name__ == "__main__":
    main()
