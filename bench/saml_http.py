"""SAML ACS over HTTP: the bridge under gunicorn with Redis beside python3-saml's demo-style ACS.

Run: `.venv/bin/python bench/saml_http.py [--seconds 10] [--concurrency 8]`.

Both servers run with the gunicorn settings of `sso-bridge serve` (2 workers, 4 threads
each) and get the same kind of IdP-initiated response, for 1,000 returning people (made
by the warm-up) in turn, freshly signed before the clock starts (assertion signed; then
assertion and response signed):

- bridge: POST /saml/t/acs: every check of the connector, the replay cache in Redis,
  link, update, session, redirect to the LMS;
- python3-saml as its demo Flask app writes an ACS: settings dict and
  `OneLogin_Saml2_Auth.process_response()` per request, then a redirect. It keeps no
  replay cache, links nobody and starts no session: it does less than the bridge.

Both servers stay up and take turns in short rounds (`bench.loadgen.alternate`), so the
machine's drift hits both alike. Results go to bench/results/saml_http.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import servers  # noqa: E402
from bench.loadgen import alternate, post_form, run_load  # noqa: E402
from bench.report import http_arguments, row, save  # noqa: E402
from bench.saml_acs import idp_metadata, library_settings  # noqa: E402
from bench.token_handoff import Keys, bridge_settings  # noqa: E402
from tests import saml_forge as forge  # noqa: E402
from tests.services import RedisServer, free_port  # noqa: E402

RETURNING = 1000
"""Distinct returning people: Monday 09:00 is many people once each."""


def acs_requests(keys: forge.KeyPair, port: int, n: int, signed: str) -> list[bytes]:
    base = f"http://127.0.0.1:{port}/saml/t"
    spec = forge.ResponseSpec(
        destination=f"{base}/acs", recipient=f"{base}/acs", audience=[f"{base}/metadata"]
    )
    out = []
    for i in range(n):
        person = f"R{i % RETURNING:04d}"
        xml = forge.sign_spec(
            replace(spec, response_id=forge.new_id(), assertion_id=forge.new_id(), name_id=person),
            keys,
            target=signed,
        )
        body = urlencode({"SAMLResponse": forge.to_b64(xml)}).encode()
        out.append(post_form("/saml/t/acs", f"127.0.0.1:{port}", body))
    return out


def naive_settings(cert_b64: str, port: int, signed: str) -> dict[str, Any]:
    settings = library_settings(cert_b64)
    base = f"http://127.0.0.1:{port}/saml/t"
    settings["sp"] = {
        "entityId": f"{base}/metadata",
        "assertionConsumerService": {"url": f"{base}/acs"},
    }
    if signed == "both":
        settings["security"]["wantMessagesSigned"] = True
    return settings


def main() -> int:
    parser = http_arguments(__doc__)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sso-bridge-bench-saml-"))
    keys = Keys(tmp)
    idp = forge.TestKeys.generate()
    (tmp / "idp.xml").write_text(idp_metadata(idp.cert_b64))
    redis = RedisServer()
    # Signing is the slow part of preparing; enough for the time bound at ~1,000/s.
    supply = int(args.seconds * 1000)
    results: dict[str, Any] = {"concurrency": args.concurrency, "workers": args.workers}
    failed = False
    try:
        for signed in ("assertion", "both"):
            naive_port = free_port()
            naive_file = tmp / f"naive-{signed}.json"
            naive_file.write_text(json.dumps(naive_settings(idp.cert_b64, naive_port, signed)))
            bridge_port = free_port()
            settings = bridge_settings(keys, bridge_port, f"sqlite:///{tmp}/{signed}.db", redis.url)
            settings["connections"] = {
                "t": {
                    "type": "saml",
                    "idp_metadata_file": str(tmp / "idp.xml"),
                    "allow_unsolicited": True,
                    "want_response_signed": signed == "both",
                }
            }
            settings_file = tmp / f"bridge-{signed}.json"
            settings_file.write_text(json.dumps(settings))
            running = [
                servers.naive_saml(str(naive_file), naive_port, args.workers),
                servers.bridge(str(settings_file), bridge_port, args.workers),
            ]
            try:
                for server in running:
                    # The warm-up signs in every returning person once (their accounts),
                    # and each worker imports and builds its caches.
                    warm = run_load(
                        server.port, acs_requests(idp, server.port, RETURNING, signed), 8, 60
                    )
                    if warm.unexpected:
                        raise RuntimeError(f"warm-up failed: {warm.statuses}; see {server.log}")
                # Both servers up, measured in turns (the idle one costs nothing).
                measured = alternate(
                    {
                        "naive": (naive_port, acs_requests(idp, naive_port, supply, signed)),
                        "bridge": (bridge_port, acs_requests(idp, bridge_port, supply, signed)),
                    },
                    args.concurrency,
                    args.seconds,
                )
            finally:
                for server in running:
                    server.close()
            results[f"python3_saml_demo_acs_{signed}"] = measured["naive"].as_dict()
            results[f"bridge_acs_{signed}"] = measured["bridge"].as_dict()
            failed |= measured["naive"].unexpected > 0 or measured["bridge"].unexpected > 0
    finally:
        redis.close()

    print(f"\nworkers {args.workers}, concurrency {args.concurrency}")
    print(f"{'scenario':<52} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>7}")
    for signed in ("assertion", "both"):
        naive_rate = results[f"python3_saml_demo_acs_{signed}"]["per_second"]
        print(
            row(
                f"python3-saml demo ACS, {signed} signed",
                results[f"python3_saml_demo_acs_{signed}"],
            )
        )
        print(row(f"sso-bridge ACS, {signed} signed", results[f"bridge_acs_{signed}"], naive_rate))
    save("saml_http", results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
