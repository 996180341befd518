"""OIDC callback over HTTP: the bridge under gunicorn with Redis against a local provider.

Run: `.venv/bin/python bench/oidc_callback.py [--seconds 10] [--concurrency 8]`.

Scenario, a closed loop of `--concurrency` keep-alive connections on 127.0.0.1:
GET /oidc/bench/callback?code=…&state=…&iss=… with the login's browser-binding cookie,
for 1,000 returning people in turn (their accounts made by the warm-up), on SQLite.
Each callback: the state and cookie checks and the one-shot transaction in Redis, the
token request to the provider (client_secret_basic, PKCE; over the connector's pool of
kept-alive connections), the ES256 ID token verified with the pinned
algorithm, link, compare the profile, session, and a 303 to the LMS.

Before the clock, for every callback: GET /oidc/bench/login?next=… at the bridge (its
redirect gives state, nonce and PKCE challenge, its answer sets the cookie), a code
registered at the provider with its token response, and the ID token signed with that
login's nonce. The provider (`servers.OidcProvider`) runs under gunicorn with one worker:
a werkzeug thread server in this process would share a core and the GIL with the load
generator, and measured slower (see docs/performance.md).

Baselines from the same run:
- a trivial Flask endpoint under the same gunicorn settings, sent the same callbacks
  (read the query and the cookie, redirect);
- bare verification of the same ID tokens with joserfc (the library the connector uses),
  signature and claims, in this process, one thread;
- the provider's token endpoint alone over HTTP, sent the token requests the bridge
  sends, each on a new connection: an upper bound of what the round trip costs (one
  request per prepared callback, single-use codes: it ends before the time bound).

Results go to bench/results/oidc_callback.json.
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from joserfc import jwt  # noqa: E402
from joserfc.jwk import ECKey  # noqa: E402

from bench import servers  # noqa: E402
from bench.loadgen import get, post_form, run_load, summary  # noqa: E402
from bench.report import http_arguments, row, save  # noqa: E402
from bench.token_handoff import Keys, bridge_settings  # noqa: E402
from sso_bridge.connectors.oidc import BROWSER_COOKIE_PREFIX  # noqa: E402
from tests.oidc_rogue import CLIENT_ID, CLIENT_SECRET, s256  # noqa: E402
from tests.services import RedisServer, free_port  # noqa: E402

CONNECTION = "bench"
KID = "bench-es256"
RETURNING = [f"R{i:04d}" for i in range(1000)]
"""Distinct returning people: Monday 09:00 is many people once each."""
CALLBACK = frozenset({303})


class Provider:
    """The local provider's key, its server, and what the benchmark prepares for it."""

    def __init__(self, tmp: Path) -> None:
        self.key = ECKey.generate_key("P-256", parameters={"kid": KID, "alg": "ES256"})
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        public = self.key.as_dict(private=False)
        public.update(use="sig", alg="ES256")
        settings = tmp / "provider.json"
        settings.write_text(
            json.dumps(
                {
                    "issuer": self.issuer,
                    "jwks": {"keys": [public]},
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                }
            )
        )
        self.server = servers.oidc_provider(str(settings), self.port)

    def id_token(self, sub: str, nonce: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": sub,
            "aud": [CLIENT_ID],
            "iat": now,
            "exp": now + 900,
            "auth_time": now,
            "nonce": nonce,
            "email": f"{sub.lower()}@example.com",
            "given_name": "Ada",
            "family_name": "Lovelace",
            "name": "Ada Lovelace",
            "department": "Engineering",
        }
        return jwt.encode({"alg": "ES256", "kid": KID, "typ": "JWT"}, claims, self.key)

    def register(self, codes: dict[str, list[str]]) -> None:
        """Load code → [code_challenge, token response] into the provider."""
        request = urllib.request.Request(
            f"{self.issuer}/prepared",
            data=json.dumps(codes).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()


def token_response(id_token: str) -> str:
    return json.dumps(
        {
            "access_token": secrets.token_urlsafe(32),
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "openid profile email",
            "id_token": id_token,
        }
    )


def bridge_oidc_settings(keys: Keys, port: int, db_url: str, redis_url: str, issuer: str) -> Any:
    settings = bridge_settings(keys, port, db_url, redis_url)
    settings["connections"] = {
        CONNECTION: {
            "type": "oidc",
            "issuer": issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "client_auth_method": "client_secret_basic",
            "id_token_algorithms": ["ES256"],
            # The ID token carries every claim the mapping reads; userinfo would be a
            # second provider round trip per login, and many deployments turn it off.
            "use_userinfo": False,
        }
    }
    return settings


def header(head: str, name: str) -> list[str]:
    prefix = f"{name.lower()}:"
    return [
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")
        if line.lower().startswith(prefix)
    ]


def prepare(
    provider: Provider, port: int, people: list[str]
) -> tuple[list[bytes], list[dict[str, str]]]:
    """The callbacks for one login each of `people` (logins made now, at the bridge).

    Returns the callback requests and, for the baselines, what each sent to the
    provider's token endpoint (code verifier aside: only the bridge knows it).
    """
    host = f"127.0.0.1:{port}"
    logins = [
        get(f"/oidc/{CONNECTION}/login?{urlencode({'next': f'/course/{i % 50}'})}", host)
        for i in range(len(people))
    ]
    started = run_load(port, logins, 8, 600, expect=frozenset({302}), keep_heads=True)
    if started.unexpected or len(started.latencies) != len(logins):
        raise RuntimeError(f"logins failed: {started.statuses} {started.first_unexpected!r}")
    callbacks: list[bytes] = []
    tokens: list[dict[str, str]] = []
    codes: dict[str, list[str]] = {}
    for person, head in zip(people, started.heads, strict=True):
        query = dict(parse_qsl(urlsplit(header(head, "location")[0]).query))
        cookie = next(c for c in header(head, "set-cookie") if BROWSER_COOKIE_PREFIX in c)
        code = secrets.token_urlsafe(24)
        id_token = provider.id_token(person, query["nonce"])
        codes[code] = [query["code_challenge"], token_response(id_token)]
        tokens.append({"id_token": id_token, "nonce": query["nonce"]})
        params = {"code": code, "state": query["state"], "iss": provider.issuer}
        callbacks.append(
            get(
                f"/oidc/{CONNECTION}/callback?{urlencode(params)}",
                host,
                {"Cookie": cookie.split(";", 1)[0]},
            )
        )
    provider.register(codes)
    return callbacks, tokens


def token_requests(provider: Provider, port: int, tokens: list[dict[str, str]]) -> list[bytes]:
    """The token requests the bridge makes, for codes of their own (with their PKCE pair)."""
    codes: dict[str, list[str]] = {}
    out = []
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    redirect_uri = f"http://127.0.0.1:{port}/oidc/{CONNECTION}/callback"
    for token in tokens:
        code, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(64)
        codes[code] = [s256(verifier), token_response(token["id_token"])]
        body = urlencode(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            }
        ).encode()
        headers = {"Authorization": f"Basic {basic}", "Connection": "close"}
        out.append(post_form("/token", f"127.0.0.1:{provider.port}", body, headers))
    provider.register(codes)
    return out


def bare_verify(provider: Provider, tokens: list[dict[str, str]]) -> dict[str, float]:
    """joserfc's signature check and claim validation of each ID token, one thread."""
    public = ECKey.import_key(provider.key.as_dict(private=False))
    timings = []
    for token in tokens:
        start = time.perf_counter()
        registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": provider.issuer},
            aud={"essential": True, "value": CLIENT_ID},
            sub={"essential": True},
            nonce={"essential": True, "value": token["nonce"]},
        )
        registry.validate(jwt.decode(token["id_token"], public, algorithms=["ES256"]).claims)
        timings.append(time.perf_counter() - start)
    return summary(timings)


def main() -> int:
    parser = http_arguments(__doc__)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sso-bridge-bench-oidc-"))
    keys = Keys(tmp)
    redis = RedisServer()
    # Enough prepared callbacks that the time bound, not the supply, ends the run.
    supply = int(args.seconds * 500)
    results: dict[str, Any] = {"concurrency": args.concurrency, "workers": args.workers}
    failed = False
    provider = Provider(tmp)
    try:
        port = free_port()
        settings_file = tmp / "bridge.json"
        settings_file.write_text(
            json.dumps(
                bridge_oidc_settings(
                    keys, port, f"sqlite:///{tmp}/bridge.db", redis.url, provider.issuer
                )
            )
        )
        bridge = servers.bridge(str(settings_file), port, args.workers)
        try:
            # The warm-up signs in every returning person once (their accounts). The first
            # callback goes alone, so the provider's keys are fetched before the others
            # start (they would wait for that fetch: jwks.py).
            warm, _ = prepare(provider, port, RETURNING)
            for batch, connections in ((warm[:1], 1), (warm[1:], 8)):
                result = run_load(port, batch, connections, 120, expect=CALLBACK)
                if result.unexpected:
                    raise RuntimeError(f"warm-up failed: {result.statuses}; see {bridge.log}")
            people = [RETURNING[i % len(RETURNING)] for i in range(supply)]
            callbacks, tokens = prepare(provider, port, people)
            # CPU time per request says what each process costs, whatever else the
            # machine runs meanwhile: the provider must stay small beside the bridge.
            pids = {"bridge": bridge.worker_pids(), "provider": provider.server.worker_pids()}
            before = {name: servers.cpu_seconds(p) for name, p in pids.items()}
            returning = run_load(port, callbacks, args.concurrency, args.seconds, CALLBACK)
            results["bridge_callback_returning_user_sqlite"] = returning.as_dict()
            results["cpu_ms_per_callback"] = {
                name: round((servers.cpu_seconds(p) - before[name]) * 1000 / returning.sent, 2)
                for name, p in pids.items()
            }
            failed |= returning.unexpected > 0
            requests = token_requests(provider, port, tokens)
            before_alone = servers.cpu_seconds(pids["provider"])
            alone = run_load(
                provider.port, requests, args.concurrency, args.seconds, frozenset({200})
            )
            results["provider_token_endpoint"] = alone.as_dict()
            results["cpu_ms_per_token_request"] = round(
                (servers.cpu_seconds(pids["provider"]) - before_alone) * 1000 / alone.sent, 2
            )
            failed |= alone.unexpected > 0
        finally:
            bridge.close()

        results["bare_id_token_verify"] = bare_verify(provider, tokens[:2000])

        port = free_port()
        trivial = servers.trivial(port, args.workers)
        try:
            # The same callbacks, read and answered with a redirect. It keeps nothing, so
            # they may come round again until the time bound ends the run.
            again = callbacks * (int(args.seconds * 8000) // len(callbacks) + 1)
            run_load(port, again[:200], args.concurrency, args.seconds, CALLBACK)  # warm-up
            plain = run_load(port, again[200:], args.concurrency, args.seconds, CALLBACK)
            results["trivial_flask"] = plain.as_dict()
            failed |= plain.unexpected > 0
        finally:
            trivial.close()
    finally:
        provider.server.close()
        redis.close()

    report(results)
    save("oidc_callback", results)
    return 1 if failed else 0


def report(results: dict[str, Any]) -> None:
    trivial = results["trivial_flask"]["per_second"]
    print(f"\nworkers {results['workers']}, concurrency {results['concurrency']}")
    print(f"{'scenario':<52} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs Flask':>7}")
    print(row("trivial Flask endpoint, same gunicorn settings", results["trivial_flask"]))
    print(row("bare ID token verification (joserfc, 1 thread)", results["bare_id_token_verify"]))
    print(
        row("provider token endpoint alone (new connections)", results["provider_token_endpoint"])
    )
    print(
        row(
            "bridge callback, returning user, SQLite",
            results["bridge_callback_returning_user_sqlite"],
            trivial,
        )
    )
    cpu = results["cpu_ms_per_callback"]
    print(
        f"CPU ms per callback: bridge workers {cpu['bridge']}, provider {cpu['provider']};"
        f" provider alone, per token request {results['cpu_ms_per_token_request']}"
    )


if __name__ == "__main__":
    sys.exit(main())
