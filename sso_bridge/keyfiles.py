"""Key files: generate them, write them safely, and sign test handoff tokens with them."""

from __future__ import annotations

import os
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def generate_private_key(kind: str) -> PrivateKey:
    """A fresh key: RSA 3072, EC P-256 or Ed25519."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {kind!r}")


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write a PKCS#8 PEM readable by its owner only, created with that mode (no window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_public_key(path: Path, key: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def self_signed_certificate(key: PrivateKey, common_name: str, days: int) -> bytes:
    """A self-signed X.509 certificate (PEM) for ``key``: what SAML metadata publishes.

    SAML peers trust the exact certificate from metadata, not a CA chain, so a
    self-signed one is the norm; its validity dates are informational to most IdPs.
    """
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, algorithm)
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def signing_key(path: Path) -> tuple[Key, str]:
    """A joserfc key and its algorithm from a PEM private key or an HS256 secret file."""
    data = path.read_bytes()
    if b"PRIVATE KEY" not in data:
        return OctKey.import_key(data.strip()), "HS256"
    private = serialization.load_pem_private_key(data, password=None)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return OKPKey.import_key(private), "EdDSA"
    if isinstance(private, ec.EllipticCurvePrivateKey):
        if not isinstance(private.curve, ec.SECP256R1):
            raise ValueError(f"{path}: only EC keys on P-256 (ES256) are supported")
        return ECKey.import_key(private), "ES256"
    if isinstance(private, rsa.RSAPrivateKey):
        return RSAKey.import_key(private), "RS256"
    raise ValueError(f"{path}: unsupported key type")


def mint_handoff_token(key_file: Path, kid: str, claims: dict[str, Any]) -> str:
    """Sign ``claims`` as a handoff token (typ handoff+jwt), as a portal does."""
    key, alg = signing_key(key_file)
    header = {"alg": alg, "typ": "handoff+jwt", "kid": kid}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags the RFC 9864 rename of "EdDSA"
        return jwt.encode(header, claims, key, algorithms=[alg])
