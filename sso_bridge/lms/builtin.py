"""The built-in LMS adapter: accounts live in the bridge's own database.

The LMS reads them through the bridge's OpenID Provider (claims in the ID token
and userinfo), so there is nothing to call: the user row is the account.
"""

from __future__ import annotations

from ..models import User


class BuiltinLms:
    name = "builtin"

    def ensure_account(self, user: User) -> str:
        return user.public_id

    def suspend(self, user: User) -> None:
        # The provider refuses blocked and inactive users, which is what suspension means here.
        return None
