"""The provider's ID-token signing keys: loaded once, the first signs, all are published.

Rotation without breaking a login: add the new key at the END of
``provider.signing_key_files`` and wait until the LMS has refreshed its cached
JWKS; then move it first (it signs from then on) and keep the old key listed
until every ID token it signed has expired (``provider.id_token_lifetime``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc.jwk import ECKey, Key, RSAKey

MIN_RSA_BITS = 2048
EMPTY_KEYS_MESSAGE = "provider.signing_key_files is empty: run `sso-bridge certs generate`"


class ProviderKeyError(ValueError):
    """A configured signing key is unusable; the message names its file."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    key: Key
    source: Path


class ProviderKeys:
    """The provider's ID-token keys: the first signs, all are published in the JWKS.

    Publishing the older keys too is what makes a rotation safe: an ID token
    signed a minute before the restart still verifies against the JWKS the LMS
    fetches after it. To rotate, append the new key, wait for the LMS's JWKS
    cache to expire, then move it to the front.
    """

    def __init__(self, files: Sequence[Path]) -> None:
        if not files:
            raise ProviderKeyError(EMPTY_KEYS_MESSAGE)
        self.keys: list[SigningKey] = []
        for path in files:
            key = load_signing_key(Path(path))
            clash = next((k for k in self.keys if k.kid == key.kid), None)
            if clash is not None:
                raise ProviderKeyError(f"{path}: the same key as {clash.source}")
            self.keys.append(key)

    @property
    def signing(self) -> SigningKey:
        """The key that signs new ID tokens."""
        return self.keys[0]

    @property
    def algorithms(self) -> list[str]:
        """Every algorithm a published key uses, the signing one first."""
        return list(dict.fromkeys(k.alg for k in self.keys))

    def jwks(self) -> dict[str, Any]:
        """The public JWKS: public parameters only, each with kid, alg and use."""
        return {
            "keys": [
                k.key.as_dict(private=False, kid=k.kid, alg=k.alg, use="sig") for k in self.keys
            ]
        }


def load_signing_key(path: Path) -> SigningKey:
    """Load one PEM private key (RSA ≥ 2048 bits or EC P-256) and pin its algorithm."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProviderKeyError(f"{path}: cannot read the signing key: {exc.strerror}") from None
    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # TypeError: an encrypted key; the bridge cannot ask anyone for its password.
        raise ProviderKeyError(
            f"{path}: not an unencrypted PEM private key (RSA or EC P-256)"
        ) from None
    key: Key
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < MIN_RSA_BITS:
            raise ProviderKeyError(f"{path}: RSA keys need at least {MIN_RSA_BITS} bits")
        key, alg = RSAKey.import_key(private), "RS256"
    elif isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(
        private.curve, ec.SECP256R1
    ):
        key, alg = ECKey.import_key(private), "ES256"
    else:
        raise ProviderKeyError(f"{path}: the key must be RSA (≥ {MIN_RSA_BITS} bits) or EC P-256")
    # RFC 7638: the kid is derived from the key itself, so it needs no configuration
    # and two files holding the same key are noticed.
    return SigningKey(kid=key.thumbprint(), alg=alg, key=key, source=path)
