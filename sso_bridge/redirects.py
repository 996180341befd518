"""Where a person may be sent after sign-in: the open-redirect guard.

``next`` and ``RelayState`` come from the browser, so they are attacker-controlled.
They may be a path on the LMS (``/course/view.php?id=3``) or an absolute URL on
the LMS's own host or an allow-listed one; anything else is refused, not
"repaired", because browsers and servers disagree on edge cases (``/\\evil``,
``https:evil``, tabs inside the scheme) and a repaired value may still escape.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from .errors import NextNotAllowed

MAX_NEXT = 2048
# Backslashes, whitespace and control characters are never needed in a deep link and are
# exactly what parser-confusion payloads are made of; also checked after percent-decoding.
SUSPICIOUS = re.compile(r"[\\\s\x00-\x1f\x7f]")


def safe_next(value: str | None, lms_base_url: str, allowed_hosts: list[str]) -> str:
    """The absolute LMS URL to send the person to, or NextNotAllowed."""
    if not value:
        return lms_base_url + "/"
    if len(value) > MAX_NEXT:
        raise NextNotAllowed("next is too long")
    decoded = unquote(value)
    if SUSPICIOUS.search(value) or SUSPICIOUS.search(decoded):
        raise NextNotAllowed("next holds a backslash, white space or a control character")
    if value.startswith("/"):
        # "//host" and "/%2F host" are protocol-relative: another site, not a path.
        if value.startswith("//") or decoded.startswith("//"):
            raise NextNotAllowed("next is protocol-relative")
        return lms_base_url + value
    parts = urlsplit(value)
    base = urlsplit(lms_base_url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise NextNotAllowed("next is neither a path nor an http(s) URL")
    if parts.scheme == "http" and base.scheme != "http":
        raise NextNotAllowed("next downgrades to http")
    if "@" in parts.netloc:
        raise NextNotAllowed("next carries user information")
    allowed = {base.netloc.lower(), *(host.lower() for host in allowed_hosts)}
    if parts.netloc.lower() not in allowed:
        raise NextNotAllowed(f"next host {parts.netloc!r} is not allowed")
    return value
