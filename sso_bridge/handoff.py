"""From the bridge's session into the LMS, signed in, at the deep-linked page.

The LMS is an OpenID Connect client of the bridge. When it registered a
third-party-initiated login URL (OIDC Core §4), the person is sent there with
``iss`` and ``target_link_uri``, and the LMS starts a fresh authorization
request that the bridge answers at once from its session. Without one, the
person goes straight to the target and the LMS starts the login itself.
"""

from __future__ import annotations

from urllib.parse import urlencode

from .settings import Settings


def handoff_url(settings: Settings, target: str) -> str:
    """Where to send a freshly signed-in person so they land on ``target`` in the LMS."""
    client = next(
        (c for c in settings.provider.clients if c.client_id == settings.lms.client_id), None
    )
    if client is None or client.initiate_login_uri is None:
        return target
    separator = "&" if "?" in client.initiate_login_uri else "?"
    query = urlencode({"iss": settings.base_url, "target_link_uri": target})
    return f"{client.initiate_login_uri}{separator}{query}"
