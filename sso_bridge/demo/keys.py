"""Demo code, not part of the product: the demo's keys and secrets, generated once per var dir.

Every file is created with mode 0600 in one step (no window in which another user
could read it) and reused on later starts, so the demo's accounts, client
registration and signed cookies survive a restart.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

PORTAL_KEY = "portal-ed25519.pem"
PORTAL_PUBLIC_KEY = "portal-ed25519.pub.pem"
PROVIDER_KEY = "provider-rsa.pem"


@dataclass(frozen=True)
class DemoKeys:
    """Paths and values the three demo apps are configured with."""

    portal_private_pem: bytes
    portal_public_key_file: Path
    provider_key_file: Path
    lms_client_secret: str
    portal_flask_secret: str
    lms_flask_secret: str


def ensure_keys(var_dir: Path) -> DemoKeys:
    """Load the demo's key material from ``var_dir``, creating whatever is missing."""
    var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    portal_pem = _ensure(var_dir / PORTAL_KEY, _ed25519_pem)
    _ensure(var_dir / PORTAL_PUBLIC_KEY, lambda: _public_pem(portal_pem))
    _ensure(var_dir / PROVIDER_KEY, _rsa_pem)
    # 36 random bytes are 48 URL-safe characters, over the provider's 32-character minimum.
    client_secret = _ensure(var_dir / "lms-client-secret", lambda: _token(36))
    return DemoKeys(
        portal_private_pem=portal_pem,
        portal_public_key_file=var_dir / PORTAL_PUBLIC_KEY,
        provider_key_file=var_dir / PROVIDER_KEY,
        lms_client_secret=client_secret.decode(),
        portal_flask_secret=_ensure(var_dir / "portal-flask-secret", lambda: _token(32)).decode(),
        lms_flask_secret=_ensure(var_dir / "lms-flask-secret", lambda: _token(32)).decode(),
    )


def _ensure(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's content, after creating it from ``make()`` if it does not exist yet."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Made by an earlier start.
        existing = path.read_bytes().strip()
        if not existing:
            raise RuntimeError(f"{path} is empty: delete it and start the demo again") from None
        return existing
    data = make()
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return data.strip()


def _token(nbytes: int) -> bytes:
    return secrets.token_urlsafe(nbytes).encode()


def _ed25519_pem() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _rsa_pem() -> bytes:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(private_pem: bytes) -> bytes:
    private = serialization.load_pem_private_key(private_pem, password=None)
    return private.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
