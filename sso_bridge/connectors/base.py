"""What every connector offers: plain data in, a verified identity out.

Connectors never see Flask's request and never touch provisioning or the LMS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..identity import Identity


@dataclass(frozen=True)
class Verified:
    """The result of a successful upstream check."""

    identity: Identity
    next: str | None = None
    """The deep link the upstream asked for; not validated yet (redirects.safe_next does that)."""
    session: dict[str, Any] = field(default_factory=dict)
    """What the connector needs later in the bridge session (for example for single logout)."""
    request_id: str | None = None
    """The id of the bridge's own request this login answers, if it started it."""


class Connector(Protocol):
    connection_id: str

    def complete(self, request_data: Mapping[str, str]) -> Verified:
        """Verify the upstream message in ``request_data``; raise a BridgeError otherwise."""
