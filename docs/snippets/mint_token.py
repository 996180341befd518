"""Mint a handoff token for sso-bridge (docs/token-handoff.md), in Python with joserfc.

    pip install joserfc
    python mint_token.py PRIVATE_KEY_PEM KID AUDIENCE ISSUER SUBJECT

Each argument may instead come from the environment: HANDOFF_PRIVATE_KEY,
HANDOFF_KID, HANDOFF_AUDIENCE, HANDOFF_ISSUER, HANDOFF_SUBJECT. Optional
profile claims, as a portal would fill them from its HR record: HANDOFF_EMAIL,
HANDOFF_GIVEN_NAME, HANDOFF_FAMILY_NAME, HANDOFF_GROUPS (comma-separated),
HANDOFF_NEXT (a deep link such as /courses/safety-101).

The algorithm follows the key: Ed25519 -> EdDSA, EC P-256 -> ES256, RSA -> RS256.
Prints the token on standard output.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
import warnings

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

LIFETIME = 60  # seconds; the bridge accepts at most the connection's max_lifetime (120 by default)
ARGS = (
    "HANDOFF_PRIVATE_KEY",
    "HANDOFF_KID",
    "HANDOFF_AUDIENCE",
    "HANDOFF_ISSUER",
    "HANDOFF_SUBJECT",
)


def main(argv: list[str]) -> int:
    values = [argv[i] if i < len(argv) else os.environ.get(name, "") for i, name in enumerate(ARGS)]
    if not all(values):
        print(__doc__, file=sys.stderr)
        return 2
    key_path, kid, audience, issuer, subject = values

    with open(key_path, "rb") as handle:
        pem = handle.read()
    # The algorithm is pinned to the key type; the bridge refuses any other pairing.
    key: Key | None = None
    alg = None
    for key_class, key_alg in ((OKPKey, "EdDSA"), (ECKey, "ES256"), (RSAKey, "RS256")):
        try:
            key = key_class.import_key(pem)
        except (JoseError, ValueError):
            continue
        if key.as_dict().get("crv") in (None, "Ed25519", "P-256"):
            alg = key_alg
        break
    if key is None or alg is None or not key.is_private:
        print(f"{key_path}: use an Ed25519, EC P-256 or RSA private key (PEM)", file=sys.stderr)
        return 2

    now = int(time.time())
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": audience,  # exactly https://<bridge>/token/<connection id>
        "sub": subject,  # the stable employee id, not the e-mail address
        "iat": now,
        "exp": now + LIFETIME,
        "jti": str(uuid.uuid4()),  # single use
    }
    for claim in ("email", "given_name", "family_name", "next"):
        value = os.environ.get(f"HANDOFF_{claim.upper()}")
        if value:
            claims[claim] = value
    groups = [g.strip() for g in os.environ.get("HANDOFF_GROUPS", "").split(",") if g.strip()]
    if groups:
        claims["groups"] = groups

    header = {"alg": alg, "typ": "handoff+jwt", "kid": kid}
    with warnings.catch_warnings():
        # joserfc flags "EdDSA" as deprecated by RFC 9864; it is the name the bridge expects.
        warnings.simplefilter("ignore")
        token = jwt.encode(header, claims, key, algorithms=[alg])
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
