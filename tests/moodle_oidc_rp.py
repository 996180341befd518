"""Moodle's auth_oidc plugin, as the bridge sees it: a relying party that sends no PKCE.

Moodle cannot run here, so this stands in for the plugin's two halves, read from its
source (``classes/oidcclient.php``, ``classes/loginflow/authcode.php``):

- ``/auth/oidc/`` without ``state`` starts a login: a state row holding the nonce (``N``
  and a uniqid) and the page Moodle remembered (``wantsurl``), then a redirect to the
  authorization endpoint with ``response_type=code``, ``client_id``, ``scope``,
  ``nonce``, ``response_mode=form_post``, ``state``, ``redirect_uri`` and, for the IdP
  type *Other*, a ``resource``; no ``code_challenge``.
- ``/auth/oidc/?code=…&state=…`` (it reads GET or POST) takes the state row once, posts
  ``client_id``, ``client_secret``, ``grant_type``, ``code`` and ``redirect_uri`` to the
  token endpoint (client_secret_post; ``basic`` here for the other method), checks the
  ID token's signature and nonce, and matches the account by the *Binding username
  claim* (``email``), lower-cased: it must exist with authentication method ``oidc``.
  The person then goes to ``wantsurl``, or to the site root.

The token endpoint and the JWKS are reached through the bridge's Flask test client,
server to server, as Moodle's own HTTP client would; the browser is the test's.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import KeySet

from tests.fake_moodle import FakeMoodle
from tests.html_forms import form_fields

OIDC_PATH = "/auth/oidc/"


class PluginError(Exception):
    """What auth_oidc would show as a Moodle error page (its errorcode and detail)."""


@dataclass
class MoodleLogin:
    """A completed auth_oidc login: the account, the ID token's claims, where it lands."""

    user: dict[str, Any]
    claims: dict[str, Any]
    landing: str
    session: str


@dataclass
class MoodleOidcPlugin:
    moodle: FakeMoodle
    bridge: Any
    """The bridge's Flask test client, for the server-to-server calls."""
    issuer: str
    client_id: str
    client_secret: str
    auth_method: str = "client_secret_post"
    scope: str = "openid profile email"
    states: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def redirect_uri(self) -> str:
        return self.moodle.base_url + OIDC_PATH

    def authorization_url(self, wantsurl: str | None = None) -> str:
        """``/auth/oidc/`` without state: the URL the browser is redirected to."""
        nonce = "N" + secrets.token_hex(7)[:13]
        state = secrets.token_urlsafe(11)[:15]
        self.states[state] = (nonce, wantsurl)
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "scope": self.scope,
            "nonce": nonce,
            "response_mode": "form_post",
            "state": state,
            "redirect_uri": self.redirect_uri,
            "resource": "https://graph.microsoft.com",
        }
        return f"{self.issuer}/oauth2/authorize?{urlencode(params)}"

    def complete(self, answer: Any) -> MoodleLogin:
        """The provider's answer, posted (form_post) or redirected to ``/auth/oidc/``:
        redeem the code and sign the person in to Moodle."""
        if answer.status_code == 200:
            callback, params = form_fields(answer)  # the browser posts the form
        else:
            callback = answer.headers["Location"]
            params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
        parts = urlsplit(callback)
        if f"{parts.scheme}://{parts.netloc}{parts.path}" != self.redirect_uri:
            raise PluginError(f"not the plugin's redirect URI: {callback}")
        if params.get("error_description"):
            # The plugin logs it and shows errorauthgeneral on the front page.
            raise PluginError(f"errorauthgeneral: {params['error_description']}")
        state = self.states.pop(params.get("state", ""), None)
        if state is None:
            raise PluginError("errorauthunknownstate")
        nonce, wantsurl = state
        claims = self._id_token(params["code"])
        if claims.get("nonce") != nonce:
            raise PluginError("errorauthinvalididtoken: nonce")
        username = str(claims.get("email", "")).strip().lower()
        user = self.moodle.user_by_username(username)
        # user_login(): the account must exist with auth `oidc`; Moodle refuses suspended ones.
        if user is None or user["auth"] != "oidc" or user["suspended"]:
            raise PluginError(f"errorauthloginfailednouser: {username}")
        session = self.moodle.start_session(user["id"])
        base = self.moodle.base_url
        landing = wantsurl if wantsurl and wantsurl.startswith(base) else base + "/"
        return MoodleLogin(user, claims, landing, session)

    def _id_token(self, code: str) -> dict[str, Any]:
        data = {
            "client_id": self.client_id,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
        }
        headers: dict[str, str] = {}
        if self.auth_method == "client_secret_post":
            data["client_secret"] = self.client_secret
        else:
            raw = f"{self.client_id}:{self.client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        response = self.bridge.post("/oauth2/token", data=data, headers=headers)
        body = response.get_json()
        if response.status_code != 200 or "id_token" not in body:
            raise PluginError(f"errorauthnoidtoken: {body}")
        keys = KeySet.import_key_set(self.bridge.get("/oauth2/jwks").get_json())
        token = jwt.decode(body["id_token"], keys, algorithms=["RS256", "ES256"])
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.client_id},
            exp={"essential": True},
        ).validate(token.claims)
        return dict(token.claims)
