"""The `form_post` response mode (OAuth 2.0 Form Post Response Mode) for the code flow.

Authlib offers it only to the implicit and hybrid flows; some LMS plugins (Moodle's
auth_oidc) ask for it with the code flow. The answer then travels in the body of a
POST from the browser to the LMS instead of in its URL, so the code stays out of the
LMS's access logs, the browser history and any `Referer`.
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qsl, urlsplit

from flask import Response, render_template

QUERY = "query"
FORM_POST = "form_post"
RESPONSE_MODES = (QUERY, FORM_POST)

# The page's only script, allowed by its hash: the page's policy forbids any other.
SCRIPT = "document.forms[0].submit();"
SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()


def as_form_post(response: Response, redirect_uri: str) -> Response:
    """Turn the authorization server's redirect to ``redirect_uri`` into a form post.

    ``redirect_uri`` is the client's registered URI, already matched by Authlib; the
    response's parameters are those Authlib added to it (code, state, iss, or error).
    """
    location = urlsplit(response.headers["Location"])
    own = set(parse_qsl(urlsplit(redirect_uri).query, keep_blank_values=True))
    params = [p for p in parse_qsl(location.query, keep_blank_values=True) if p not in own]
    target = urlsplit(redirect_uri)
    page = Response(
        render_template("form_post.html", action=redirect_uri, params=params, script=SCRIPT),
        status=200,
        content_type="text/html; charset=utf-8",
    )
    # The page holds a code: never cached.
    page.headers["Cache-Control"] = "no-store"
    page.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'self'; script-src 'sha256-{SCRIPT_HASH}'; "
        f"form-action {target.scheme}://{target.netloc}; frame-ancestors 'none'; "
        "base-uri 'none'"
    )
    return page
