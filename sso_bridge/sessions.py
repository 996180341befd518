"""The bridge's own browser session, kept server-side in the ephemeral store.

The cookie holds only a random id (256 bits); the session's content lives in
the store, so every instance sees it and logout ends it everywhere.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .state import Store


@dataclass(frozen=True)
class BridgeSession:
    sid: str
    user_id: int
    public_id: str
    connection: str
    subject: str
    auth_time: int
    protocol: dict[str, Any] = field(default_factory=dict)
    """What the connector needs later, such as the SAML NameID and SessionIndex for logout."""


class Sessions:
    def __init__(self, store: Store, lifetime: int) -> None:
        self._store = store
        self.lifetime = lifetime

    def create(
        self,
        user_id: int,
        public_id: str,
        connection: str,
        subject: str,
        protocol: dict[str, Any] | None = None,
    ) -> BridgeSession:
        """A new session with a fresh id: never reuse one, so a planted id cannot be fixed."""
        session = BridgeSession(
            sid=secrets.token_urlsafe(32),
            user_id=user_id,
            public_id=public_id,
            connection=connection,
            subject=subject,
            auth_time=int(time.time()),
            protocol=protocol or {},
        )
        self._store.set(_key(session.sid), json.dumps(asdict(session)), self.lifetime)
        return session

    def get(self, sid: str | None) -> BridgeSession | None:
        if not sid or len(sid) > 64:
            return None
        raw = self._store.get(_key(sid))
        return BridgeSession(**json.loads(raw)) if raw else None

    def end(self, sid: str | None) -> None:
        if sid and len(sid) <= 64:
            self._store.delete(_key(sid))


def _key(sid: str) -> str:
    return f"session:{sid}"
