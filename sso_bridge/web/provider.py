"""The bridge as OpenID Provider toward the LMS: discovery, authorize, token, userinfo, JWKS.

The LMS is first-party: a person with a bridge session gets a code at once,
without a consent screen. The bridge cannot authenticate anyone by itself
(people sign in at their portal), so every request that needs a fresh login
ends at the page that sends them back to the portal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

from authlib.common.urls import add_params_to_uri
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oidc.core.errors import LoginRequiredError
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from ..audit import FAILURE, SUCCESS, AuditRecord
from ..errors import BridgeError, NoLogin
from ..logs import get_logger
from ..provider import (
    AUTH_METHODS,
    CLAIMS_SUPPORTED,
    GRANT_TYPE,
    RESPONSE_TYPE,
    SCOPES,
    BridgeAuthorizationCodeGrant,
    BridgeBearerTokenValidator,
    BridgeOpenIDCode,
    BridgeUserInfoEndpoint,
    EndUser,
    Provider,
    S256CodeChallenge,
    save_token,
)
from ..provider_errors import (
    InvalidAuthorizationRequest,
    RedirectUriNotRegistered,
    UnknownClient,
)
from ..provider_keys import ProviderKeys
from ..services import Services
from .context import absolute_url, correlation_id, current_session
from .form_post import FORM_POST, RESPONSE_MODES, as_form_post

bp = Blueprint("provider", __name__)
log = get_logger("sso_bridge.web.provider")

EXTENSION = "sso_bridge_provider"
AUTHORIZE_EVENT = "oidc_authorize"
TOKEN_EVENT = "oidc_token"  # noqa: S105 - an audit event name


class BridgeAuthorizationServer(AuthorizationServer):
    """Authlib's Flask authorization server, wired to the provider instead of app.config."""

    def __init__(self, provider: Provider, protector: ResourceProtector) -> None:
        super().__init__(
            query_client=provider.query_client, save_token=partial(save_token, provider)
        )
        self.provider = provider
        # Registered here rather than by init_app, which would read OAUTH2_* keys from
        # app.config: the bridge's settings are the only configuration.
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                provider.new_access_token,
                None,
                provider.settings.provider.access_token_lifetime,
            ),
        )
        self.register_grant(
            BridgeAuthorizationCodeGrant, [S256CodeChallenge(), BridgeOpenIDCode(provider)]
        )
        self.register_endpoint(BridgeUserInfoEndpoint(provider, protector))

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        super().save_token(token, request)
        g.provider_grant = {"user_id": request.user.id, "client_id": request.client.client_id}

    def handle_response(self, status_code: int, payload: Any, headers: Any) -> Response:
        response: Response = super().handle_response(status_code, payload, headers)
        if response.location:
            # RFC 9207: every authorization response, errors included, names its issuer,
            # so an LMS talking to several providers cannot be tricked into mixing them up.
            response.location = add_params_to_uri(
                response.location, [("iss", self.provider.issuer)]
            )
        return response


@dataclass(frozen=True)
class ProviderApp:
    """What ``init_provider`` keeps in ``app.extensions["sso_bridge_provider"]``."""

    provider: Provider
    server: BridgeAuthorizationServer
    protector: ResourceProtector


def init_provider(app: Flask) -> None:
    """Build the provider from the app's Services and register its routes.

    Touches no database: the clients are synced by ``sync_clients`` when the
    bridge starts (after migrations), not once per app.
    """
    services: Services = app.extensions["sso_bridge"]
    keys = ProviderKeys(services.settings.provider.signing_key_files)
    provider = Provider(services.settings, services.db, services.store, keys)
    protector = ResourceProtector()
    protector.register_token_validator(BridgeBearerTokenValidator(provider))
    server = BridgeAuthorizationServer(provider, protector)
    app.extensions[EXTENSION] = ProviderApp(provider, server, protector)
    app.register_blueprint(bp)


def _state() -> ProviderApp:
    state: ProviderApp = current_app.extensions[EXTENSION]
    return state


# -- discovery and keys -----------------------------------------------------------------------


@bp.get("/.well-known/openid-configuration")
def discovery() -> Response:
    provider = _state().provider
    return jsonify(
        {
            "issuer": provider.issuer,
            "authorization_endpoint": absolute_url("/oauth2/authorize"),
            "token_endpoint": absolute_url("/oauth2/token"),
            "userinfo_endpoint": absolute_url("/oauth2/userinfo"),
            "jwks_uri": absolute_url("/oauth2/jwks"),
            "scopes_supported": SCOPES,
            "response_types_supported": [RESPONSE_TYPE],
            "response_modes_supported": list(RESPONSE_MODES),
            "grant_types_supported": [GRANT_TYPE],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": provider.keys.algorithms,
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": CLAIMS_SUPPORTED,
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
            "authorization_response_iss_parameter_supported": True,
        }
    )


@bp.get("/oauth2/jwks")
def jwks() -> Response:
    return jsonify(_state().provider.keys.jwks())


# -- authorization endpoint ---------------------------------------------------------------------


@bp.get("/oauth2/authorize")
def authorize() -> Response:
    response = _authorize()
    # Only a redirect back to the client (Authlib set it to the registered URI) becomes a
    # form post; an invalid response_mode was refused in _authorize, by query.
    if (
        request.args.get("response_mode") == FORM_POST
        and response.status_code in (302, 303)
        and g.get("client_redirect_uri")
    ):
        return as_form_post(response, g.client_redirect_uri)
    return response


def _authorize() -> Response:
    state = _state()
    server = state.server
    end_user = _end_user()
    # Authlib validates client, redirect URI, response type, scope and PKCE first;
    # nothing is decided about the person before the request itself is known good.
    try:
        grant = server.get_consent_grant(end_user=end_user)
        g.client_redirect_uri = grant.redirect_uri
        _check_parameters(grant)
        max_age = _max_age(grant)
    except OAuth2Error as error:
        return _refuse(server, error)

    prompts = (request.args.get("prompt") or "").split()
    reason = _why_not_signed_in(end_user, prompts, max_age)
    if reason is not None or end_user is None:
        reason = reason or "no bridge session"
        if "none" in prompts:
            return _refuse(
                server,
                LoginRequiredError(
                    reason,
                    redirect_uri=grant.redirect_uri,
                    state=request.args.get("state"),
                ),
            )
        _audit_authorize(
            FAILURE, NoLogin.code, end_user.user_id if end_user else None, detail=reason
        )
        raise NoLogin(reason)

    user = state.provider.active_user(end_user.user_id, end_user.connection)
    if user is None or user.public_id != end_user.public_id:
        # A blocked person or a leaver keeps no way into the LMS, even with a live session.
        _audit_authorize(
            FAILURE, "access_denied", end_user.user_id, detail="user blocked, inactive or gone"
        )
        denied: Response = server.create_authorization_response(grant_user=None, grant=grant)
        return denied
    # No consent screen: the LMS is first-party, and the person chose to go there.
    response: Response = server.create_authorization_response(grant_user=end_user, grant=grant)
    if "code" in parse_qs(urlsplit(response.location or "").query):
        _audit_authorize(SUCCESS, "code_issued", end_user.user_id)
    return response


def _end_user() -> EndUser | None:
    """The person behind this browser's bridge session, if it has one."""
    session = current_session()
    if session is None:
        return None
    return EndUser(
        user_id=session.user_id,
        public_id=session.public_id,
        auth_time=session.auth_time,
        connection=session.connection,
    )


def _why_not_signed_in(
    end_user: EndUser | None, prompts: list[str], max_age: int | None
) -> str | None:
    """Why the session cannot answer this request, or None when it can."""
    if end_user is None:
        return "no bridge session"
    # The bridge cannot re-authenticate anyone itself: only the portal can, so a
    # request for a fresh login is sent there.
    if "login" in prompts:
        return "prompt=login: a new login must start at the portal"
    if max_age is not None and time.time() - end_user.auth_time > max_age:
        return "max_age exceeded: a new login must start at the portal"
    return None


def _refuse(server: BridgeAuthorizationServer, error: OAuth2Error) -> Response:
    """Send an OAuth error back to the client, or show the error page when that is unsafe."""
    if error.redirect_uri:
        # Authlib sets redirect_uri only once the client and the URI are verified.
        g.client_redirect_uri = error.redirect_uri
        _audit_authorize(FAILURE, str(error.error), detail=str(error.description or ""))
        response: Response = server.handle_error_response(None, error)
        return response
    exc = _page_error(server.provider, error)
    _audit_authorize(FAILURE, exc.code, detail=exc.detail)
    raise exc


def _page_error(provider: Provider, error: OAuth2Error) -> BridgeError:
    """The page-only refusal for a request whose client or redirect URI is in doubt."""
    detail = f"{error.error}: {error.description or ''}"[:512]
    client_id = request.args.get("client_id", "")[:128]
    redirect_uri = request.args.get("redirect_uri", "")[:512]
    client = provider.query_client(client_id)
    if client is None:
        return UnknownClient(detail, client_id=client_id)
    if not client.check_redirect_uri(redirect_uri):
        return RedirectUriNotRegistered(detail, client_id=client_id, redirect_uri=redirect_uri)
    return InvalidAuthorizationRequest(detail, client_id=client_id)


def _check_parameters(grant: Any) -> None:
    """What Authlib leaves to us: no parameter twice, and a response mode we offer."""
    # RFC 6749 3.1: a parameter must not appear more than once. Authlib reads the first
    # value of most, so `code_challenge=&code_challenge=X` would pass as "no PKCE".
    repeated = sorted(name for name, values in request.args.lists() if len(values) > 1)
    if repeated:
        raise InvalidRequestError(
            f"{repeated[0]} appears more than once.",
            redirect_uri=grant.redirect_uri,
            state=request.args.get("state"),
        )
    mode = request.args.get("response_mode")
    if mode is not None and mode not in RESPONSE_MODES:
        raise InvalidRequestError(
            "response_mode must be query or form_post.",
            redirect_uri=grant.redirect_uri,
            state=request.args.get("state"),
        )


def _max_age(grant: Any) -> int | None:
    """The request's max_age in seconds, if any; InvalidRequestError when it is not one."""
    raw = request.args.get("max_age")
    if raw is None or raw == "":
        return None
    # isascii: str.isdigit also accepts digits such as "²" that int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:
        raise InvalidRequestError(
            "max_age must be a non-negative integer.",
            redirect_uri=grant.redirect_uri,
            state=request.args.get("state"),
        )
    return int(raw)


# -- token and userinfo --------------------------------------------------------------------------


@bp.post("/oauth2/token")
def token() -> Response:
    server = _state().server
    if request.args:
        # RFC 6749 4.1.3: the token request's parameters travel in the body. Codes and
        # secrets in a URL end up in access logs; Authlib would read them from either.
        error = InvalidRequestError("The token request takes its parameters in the body only.")
        response: Response = server.handle_error_response(None, error)
    else:
        response = server.create_token_response()
    _no_store(response)
    granted = g.get("provider_grant")
    if response.status_code == 200 and granted is not None:
        _audit(
            TOKEN_EVENT, SUCCESS, "token_issued", granted["user_id"], client_id=granted["client_id"]
        )
    else:
        body = response.get_json(silent=True) or {}
        _audit(
            TOKEN_EVENT,
            FAILURE,
            str(body.get("error", "token_error")),
            client_id=_token_client_id(),
            detail=str(body.get("error_description", "")),
        )
    return response


@bp.route("/oauth2/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    response: Response = _state().server.create_endpoint_response("userinfo")
    _no_store(response)
    return response


def _no_store(response: Response) -> None:
    # Tokens and personal data: no cache anywhere may keep them (RFC 6749 §5.1).
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


def _token_client_id() -> str | None:
    auth = request.authorization
    client_id = (auth.username if auth is not None else None) or request.form.get("client_id")
    return client_id[:128] if client_id else None


# -- audit ----------------------------------------------------------------------------------------


def _audit_authorize(
    outcome: str, reason: str, user_id: int | None = None, detail: str = ""
) -> None:
    _audit(
        AUTHORIZE_EVENT,
        outcome,
        reason,
        user_id,
        client_id=request.args.get("client_id", "")[:128] or None,
        detail=detail,
    )


def _audit(
    event: str,
    outcome: str,
    reason: str,
    user_id: int | None = None,
    client_id: str | None = None,
    detail: str = "",
) -> None:
    services: Services = current_app.extensions["sso_bridge"]
    record = AuditRecord(
        event=event,
        outcome=outcome,
        reason=reason[:64],
        correlation_id=correlation_id(),
        user_id=user_id,
        remote_addr=request.remote_addr,
        detail={"client_id": client_id, **({"message": detail[:512]} if detail else {})},
    )
    try:
        services.audit.record(record)
    except BridgeError:
        # The LMS must still get its answer; the log line says what was not audited.
        log.exception("audit_write_failed", audit_event=event, reason=reason)
