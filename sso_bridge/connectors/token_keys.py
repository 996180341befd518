"""The keys a portal signs handoff tokens with: files, an inline JWKS, or a JWKS URL.

Each key is pinned to one algorithm (see jwks.py); a file key's type must fit it.
"""

from __future__ import annotations

import requests
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from joserfc.jwk import OctKey

from ..fetch import outbound_session
from ..jwks import KeyConfigError, PinnedKey, RemoteJwks, parse_jwks, wrap_key
from ..settings import TokenConnection, TokenKeySettings
from ..state import Store

MIN_HMAC_SECRET = 32


def load_file_key(spec: TokenKeySettings) -> PinnedKey:
    """Load one configured key file and check it fits its pinned algorithm."""
    try:
        if spec.alg == "HS256":
            assert spec.secret_file is not None
            secret = spec.secret_file.read_bytes().strip()
            if len(secret) < MIN_HMAC_SECRET:
                raise KeyConfigError(
                    f"key {spec.kid!r}: an HS256 secret needs at least {MIN_HMAC_SECRET} bytes"
                )
            return PinnedKey(spec.kid, spec.alg, OctKey.import_key(secret))
        assert spec.public_key_file is not None
        public = load_pem_public_key(spec.public_key_file.read_bytes())
    except OSError as exc:
        raise KeyConfigError(
            f"key {spec.kid!r}: cannot read {exc.filename}: {exc.strerror}"
        ) from None
    except ValueError as exc:
        if isinstance(exc, KeyConfigError):
            raise
        raise KeyConfigError(f"key {spec.kid!r}: not a PEM public key") from None
    return PinnedKey(spec.kid, spec.alg, wrap_key(spec.kid, spec.alg, public))


class TokenKeyring:
    """Resolves a ``kid`` to a pinned key for one connection.

    File and inline keys are loaded once, at start; a JWKS URL is a RemoteJwks.
    """

    def __init__(
        self,
        connection_id: str,
        settings: TokenConnection,
        store: Store,
        http: requests.Session | None = None,
    ) -> None:
        self._id = connection_id
        self._settings = settings
        self._store = store
        self._http = http or outbound_session(None)
        self._static: dict[str, PinnedKey] = {}
        for spec in settings.keys:
            self._static[spec.kid] = load_file_key(spec)
        if settings.jwks is not None:
            for kid, key in parse_jwks(settings.jwks, list(settings.algorithms)).items():
                if kid in self._static:
                    raise KeyConfigError(f"kid {kid!r} is configured twice")
                self._static[kid] = key
        self._remote = (
            RemoteJwks(
                connection_id,
                settings.jwks_url,
                settings.algorithms,
                store,
                self._http,
                settings.jwks_cache_seconds,
                settings.jwks_refetch_interval,
                settings.jwks_stale_seconds,
            )
            if settings.jwks_url
            else None
        )

    def find(self, kid: str) -> PinnedKey | None:
        if kid in self._static:
            return self._static[kid]
        return self._remote.find(kid) if self._remote is not None else None
