"""Token handoff and first login over HTTP: the bridge under gunicorn with Redis, same-run baselines.

Run: `.venv/bin/python bench/token_handoff.py [--seconds 10] [--concurrency 8]`.

Scenarios, each a closed loop of `--concurrency` keep-alive connections on 127.0.0.1:
- bridge, returning user: POST /token/acme with a fresh token for one of 1,000 people
  who already have an account, made by the warm-up (verify, jti check in Redis, link,
  compare profile, session, redirect);
- bridge, first login: the same with a new person per token (create the account with the
  builtin adapter, on SQLite; on PostgreSQL too with `--postgres`);
- storm (`--storm`): 5,000 distinct new people at 200 connections, bounded to 60 s;
  then every person must have exactly one account.

Baselines from the same run:
- a trivial Flask endpoint (read a form, redirect) under the same gunicorn settings;
- bare JWT verification of the same kind of token with joserfc (the library the
  connector uses), in this process, one thread: the floor of the cryptographic work.

Results go to bench/results/token_handoff.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from joserfc import jwt  # noqa: E402
from joserfc.jwk import OKPKey  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bench import servers  # noqa: E402
from bench.loadgen import LoadResult, post_form, run_load, summary  # noqa: E402
from bench.report import http_arguments, row, save  # noqa: E402
from sso_bridge.keyfiles import (  # noqa: E402
    generate_private_key,
    mint_handoff_token,
    write_private_key,
    write_public_key,
)
from tests.services import PostgresServer, RedisServer, free_port  # noqa: E402

ISSUER = "acme-portal"
RETURNING = [f"R{i:04d}" for i in range(1000)]
KID = "ed-1"


class Keys:
    def __init__(self, root: Path) -> None:
        key = generate_private_key("ed25519")
        self.portal = root / "portal.pem"
        self.portal_pub = root / "portal.pub.pem"
        write_private_key(self.portal, key)
        write_public_key(self.portal_pub, key.public_key())
        self.provider = root / "provider.pem"
        write_private_key(self.provider, generate_private_key("rsa"))


def bridge_settings(keys: Keys, port: int, db_url: str, redis_url: str) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    lms = f"{base}/lms"
    return {
        "base_url": base,
        "var_dir": str(Path(tempfile.mkdtemp(prefix="sso-bridge-bench-var-"))),
        "database": {"url": db_url},
        "store": {"url": redis_url},
        # Every request comes from 127.0.0.1: the per-address login limit would turn the
        # benchmark into a test of the 429 page.
        "limits": {"logins_per_minute": 100_000},
        "log": {"format": "json", "level": "WARNING"},
        "lms": {"base_url": lms, "client_id": "lms"},
        "provider": {
            "signing_key_files": [str(keys.provider)],
            "clients": [
                {
                    "client_id": "lms",
                    "client_secret": "s" * 40,
                    "redirect_uris": [f"{lms}/callback"],
                    "initiate_login_uri": f"{lms}/login",
                }
            ],
        },
        "connections": {
            "acme": {
                "type": "token",
                "issuer": ISSUER,
                "algorithms": ["EdDSA"],
                "keys": [{"kid": KID, "alg": "EdDSA", "public_key_file": str(keys.portal_pub)}],
            }
        },
    }


def token(keys: Keys, port: int, sub: str) -> str:
    now = int(time.time())
    return mint_handoff_token(
        keys.portal,
        KID,
        {
            "iss": ISSUER,
            "aud": f"http://127.0.0.1:{port}/token/acme",
            "sub": sub,
            "iat": now,
            "exp": now + 120,
            "jti": uuid.uuid4().hex,
            "email": f"{sub.lower()}@example.com",
            "given_name": "Ada",
            "family_name": "Lovelace",
            "department": "Engineering",
        },
    )


def handoff_requests(keys: Keys, port: int, subs: list[str]) -> list[bytes]:
    host = f"127.0.0.1:{port}"
    return [
        post_form("/token/acme", host, urlencode({"token": token(keys, port, sub)}).encode())
        for sub in subs
    ]


def bare_jwt(keys: Keys, port: int, n: int) -> dict[str, float]:
    """joserfc's decode and claim validation of n tokens, one thread."""
    key = OKPKey.import_key(keys.portal_pub.read_bytes())
    tokens = [token(keys, port, "E1") for _ in range(n)]
    registry = jwt.JWTClaimsRegistry(iss={"essential": True, "value": ISSUER})
    timings = []
    for value in tokens:
        start = time.perf_counter()
        registry.validate(jwt.decode(value, key, algorithms=["EdDSA"]).claims)
        timings.append(time.perf_counter() - start)
    return summary(timings)


def count_accounts(db_url: str) -> tuple[int, int]:
    """(accounts, links that point at more than one account per subject)."""
    engine = create_engine(db_url)
    with engine.connect() as conn:
        users = conn.execute(text("select count(*) from users")).scalar_one()
        dupes = conn.execute(
            text(
                "select count(*) from (select subject from identity_links"
                " group by connection, subject having count(*) > 1) d"
            )
        ).scalar_one()
    engine.dispose()
    return int(users), int(dupes)


def main() -> int:
    parser = http_arguments(__doc__)
    parser.add_argument("--postgres", action="store_true", help="also first login on PostgreSQL")
    parser.add_argument("--storm", action="store_true", help="5,000 new people at 200 connections")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sso-bridge-bench-"))
    keys = Keys(tmp)
    redis = RedisServer()
    postgres = PostgresServer() if args.postgres else None
    results: dict[str, Any] = {"concurrency": args.concurrency, "workers": args.workers}
    # Enough prepared requests that the time bound, not the supply, ends each scenario.
    supply = int(args.seconds * 1500)
    failed = False
    try:
        port = free_port()
        trivial = servers.trivial(port, args.workers)
        try:
            reqs = handoff_requests(keys, port, ["E1"] * supply)
            run_load(port, reqs[:200], args.concurrency, args.seconds)  # warm-up
            results["trivial_flask"] = run_load(
                port, reqs[200:], args.concurrency, args.seconds
            ).as_dict()
        finally:
            trivial.close()
        results["bare_jwt_verify"] = bare_jwt(keys, port, 2000)

        databases = {"sqlite": f"sqlite:///{tmp}/bridge.db"}
        if postgres is not None:
            databases["postgresql"] = postgres.create_database("bench").replace(
                "postgresql://", "postgresql+psycopg://", 1
            )
        for db_name, db_url in databases.items():
            port = free_port()
            settings_file = tmp / f"settings-{db_name}.json"
            settings_file.write_text(json.dumps(bridge_settings(keys, port, db_url, redis.url)))
            bridge = servers.bridge(str(settings_file), port, args.workers)
            try:
                # The warm-up makes the returning people: Monday 09:00 is many people
                # once each, not one person many times at once (that one waits on their
                # own provisioning lock, as tests/flows cover).
                warm = run_load(port, handoff_requests(keys, port, RETURNING), 8, 60)
                if warm.unexpected:
                    raise RuntimeError(f"warm-up failed: {warm.statuses}; see {bridge.log}")
                rss = {"after_warm_up": [round(servers.rss_mb(p), 1) for p in bridge.worker_pids()]}
                returning = run_load(
                    port,
                    handoff_requests(
                        keys, port, [RETURNING[i % len(RETURNING)] for i in range(supply)]
                    ),
                    args.concurrency,
                    args.seconds,
                )
                results[f"bridge_returning_user_{db_name}"] = returning.as_dict()
                failed |= returning.unexpected > 0
                first = run_load(
                    port,
                    handoff_requests(keys, port, [f"N{db_name[:2]}{i}" for i in range(supply)]),
                    args.concurrency,
                    args.seconds,
                )
                results[f"bridge_first_login_{db_name}"] = first.as_dict()
                failed |= first.unexpected > 0
                if args.storm and db_name == "sqlite":
                    results["storm"] = storm(keys, port, db_url)
                    failed |= not results["storm"]["ok"]
                rss["after_runs"] = [round(servers.rss_mb(p), 1) for p in bridge.worker_pids()]
                results[f"rss_mb_{db_name}"] = rss
            finally:
                bridge.close()
    finally:
        redis.close()
        if postgres is not None:
            postgres.stop()

    report(results)
    save("token_handoff", results)
    return 1 if failed else 0


def storm(keys: Keys, port: int, db_url: str) -> dict[str, Any]:
    people = [f"S{i:05d}" for i in range(5000)]
    before, _ = count_accounts(db_url)
    result: LoadResult = run_load(port, handoff_requests(keys, port, people), 200, 60)
    after, dupes = count_accounts(db_url)
    summary = result.as_dict()
    summary.update(
        people=len(people),
        accounts_created=after - before,
        duplicate_links=dupes,
        ok=result.unexpected == 0 and after - before == len(people) and dupes == 0,
    )
    return summary


def report(results: dict[str, Any]) -> None:
    trivial = results["trivial_flask"]["per_second"]
    print(f"\nworkers {results['workers']}, concurrency {results['concurrency']}")
    print(f"{'scenario':<52} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs Flask':>7}")
    print(row("trivial Flask endpoint, same gunicorn settings", results["trivial_flask"]))
    print(row("bare JWT verification (joserfc, 1 thread)", results["bare_jwt_verify"]))
    for name in [k for k in results if k.startswith("bridge_")]:
        print(row(name.replace("_", " "), results[name], trivial))
    if "storm" in results:
        s = results["storm"]
        print(
            f"storm: {s['people']} people, {s['requests']} requests in {s['seconds']} s,"
            f" {s['accounts_created']} accounts, {s['duplicate_links']} duplicates,"
            f" unexpected {s['unexpected']}, p99 {s['p99_ms']} ms"
        )
    for name in [k for k in results if k.startswith("rss_mb_")]:
        print(f"{name}: {results[name]}")


if __name__ == "__main__":
    sys.exit(main())
