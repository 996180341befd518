"""The LMS adapter interface: the only way provisioning reaches a learning platform.

Adapters never see SAML or OIDC; they get the user as the bridge stores it.
"""

from __future__ import annotations

from typing import Protocol

from ..models import User


class LmsAdapter(Protocol):
    name: str

    def ensure_account(self, user: User) -> str:
        """Create or update the LMS account for ``user``; return its LMS account id.

        Must be idempotent: called on every login, and again on a retry after a failure.
        """

    def suspend(self, user: User) -> None:
        """Stop ``user`` from using the LMS (a leaver), keeping their records."""
