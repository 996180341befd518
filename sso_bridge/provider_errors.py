"""Refusals of the bridge's OpenID Provider that are shown as a page, never redirected.

An authorization request whose client or redirect URI cannot be trusted must
not be answered with a redirect (RFC 6749 §4.1.2.1): the redirect target is
exactly what is in doubt. These errors stop at the bridge's error page.
"""

from __future__ import annotations

from .errors import BridgeError


class InvalidAuthorizationRequest(BridgeError):
    code = "oidc_request_invalid"
    public_message = (
        "The learning platform sent a sign-in request the bridge cannot accept. "
        "Please tell your IT team and quote the reference below."
    )


class UnknownClient(InvalidAuthorizationRequest):
    code = "oidc_client_unknown"


class RedirectUriNotRegistered(InvalidAuthorizationRequest):
    code = "oidc_redirect_uri_invalid"
