"""Demo code, not part of the product: "Demo LMS", a small OpenID Connect client of the bridge.

It stands in for a real learning platform so the demo proves a standards handoff:
the bridge sends people to ``/login`` (third-party-initiated login, OIDC Core §4),
this app runs the authorization code flow with PKCE through Authlib, verifies the
ID token against the bridge's JWKS and shows what the account carries. Its own
session is Flask's signed cookie.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
)
from jinja2 import StrictUndefined
from joserfc.errors import JoseError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from .catalogue import COURSES

UNSAFE_TARGET = re.compile(r"[\\\s\x00-\x1f\x7f]|/\.\.?(/|$)")
# Claims that describe the sign-in, not the person: not kept in the LMS session.
PROTOCOL_CLAIMS = {
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "azp",
    "jti",
    "auth_time",
    "acr",
    "amr",
    "sid",
}
# What the account card shows: a label, then the claims that may carry it, first found wins.
ACCOUNT_FIELDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("name", "Name", ("name",)),
    ("email", "E-mail", ("email",)),
    ("employee_id", "Employee id", ("employee_id",)),
    ("department", "Department", ("department",)),
    ("location", "Location", ("location",)),
    ("language", "Language", ("locale",)),
    ("manager", "Manager", ("manager", "manager_id")),
    ("job_title", "Job title", ("job_title",)),
    ("groups", "Groups", ("groups",)),
    ("lms_groups", "Cohorts (rules)", ("lms_groups",)),
    ("courses", "Enrolled (rules)", ("courses",)),
)


@dataclass(frozen=True)
class LmsConfig:
    """How the demo LMS is registered with the bridge."""

    base_url: str
    issuer: str
    client_id: str
    client_secret: str
    secret_key: str

    @property
    def redirect_uri(self) -> str:
        return f"{self.base_url}/callback"


bp = Blueprint("lms", __name__)


def create_lms_app(config: LmsConfig) -> Flask:
    """The demo LMS as a WSGI app, to be mounted at the path of ``config.base_url``."""
    app = Flask(__name__, static_folder="static", template_folder="templates")
    base = urlsplit(config.base_url)
    app.config.update(
        SECRET_KEY=config.secret_key,
        SESSION_COOKIE_NAME="demo_lms_session",
        SESSION_COOKIE_PATH=base.path.rstrip("/") or "/",
        SESSION_COOKIE_HTTPONLY=True,
        # Lax: the bridge's redirect back to /callback is a top-level GET, which Lax allows.
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=base.scheme == "https",
    )
    # Undefined template variables are errors, not silently empty strings.
    app.jinja_env.undefined = StrictUndefined
    oauth = OAuth(app)
    oauth.register(
        "bridge",
        client_id=config.client_id,
        client_secret=config.client_secret,
        server_metadata_url=f"{config.issuer}/.well-known/openid-configuration",
        client_kwargs={
            "scope": "openid profile email employee groups",
            "code_challenge_method": "S256",
            # Discovery, token and userinfo calls must not hang a request thread forever.
            "default_timeout": 10,
        },
    )
    app.extensions["demo_lms"] = config
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)
    app.after_request(_security_headers)
    return app


def _config() -> LmsConfig:
    return current_app.extensions["demo_lms"]  # type: ignore[no-any-return]


def _client() -> Any:
    return current_app.extensions["authlib.integrations.flask_client"].bridge


def _is_ours(url: str) -> bool:
    """Whether ``url`` is a page of this LMS (so redirecting there is no open redirect)."""
    base = _config().base_url
    if not (url == base or url.startswith(base + "/")):
        return False
    # Browsers resolve dot segments and treat a backslash as a slash: either would lead
    # out of the LMS's path although the prefix matches.
    return not UNSAFE_TARGET.search(unquote(url[len(base) :]))


def _start_login(target: str) -> BaseResponse:
    """Send the browser to the bridge's authorize endpoint; come back to ``target``."""
    # A login always starts from an empty session: if it fails, nobody stays signed in
    # as whoever used this browser before (the portal may have switched people).
    session.clear()
    session["target"] = target
    return _client().authorize_redirect(_config().redirect_uri)  # type: ignore[no-any-return]


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse:
    """Third-party-initiated login (OIDC Core §4): the bridge asks us to sign someone in."""
    params = request.values
    if params.get("iss") != _config().issuer:
        abort(400, "This login was not started by the identity bridge this LMS trusts.")
    target = params.get("target_link_uri") or f"{_config().base_url}/"
    if not _is_ours(target):
        abort(400, "The page to open after login is not part of this LMS.")
    # Always a fresh authorization request, even with an LMS session: the person behind
    # the bridge session may be another, or their profile may have changed.
    return _start_login(target)


@bp.get("/callback")
def callback() -> BaseResponse | tuple[str, int]:
    """The bridge's answer: exchange the code, verify the ID token, keep the claims."""
    target = session.get("target") or f"{_config().base_url}/"
    client = _client()
    try:
        token = client.authorize_access_token()
        # Authlib verifies the ID token (signature from the discovery JWKS, iss, aud, exp,
        # nonce) only when the state carried a nonce; "userinfo" is the verified result.
        id_claims = token.get("userinfo")
        if not id_claims:
            raise OAuthError(error="invalid_id_token", description="no verified ID token")
        userinfo = client.userinfo(token=token)
    except (OAuthError, JoseError) as exc:
        # OAuth errors (state mismatch, an error from the bridge) and ID token failures.
        session.clear()
        return _error_page(400, _SIGN_IN_FAILED, str(exc.error or "oauth_error"))
    except requests.RequestException:
        session.clear()
        return _error_page(
            502, "The learning platform could not reach the identity bridge.", "bridge_unreachable"
        )
    # OIDC Core §5.3.4: userinfo for another subject than the ID token must not be used.
    if userinfo.get("sub") != id_claims.get("sub"):
        session.clear()
        return _error_page(400, _SIGN_IN_FAILED, "userinfo_subject_mismatch")
    claims = {k: v for k, v in {**id_claims, **userinfo}.items() if k not in PROTOCOL_CLAIMS}
    session.clear()
    session["claims"] = claims
    return redirect(target if _is_ours(target) else f"{_config().base_url}/", 303)


@bp.get("/")
def dashboard() -> BaseResponse | str:
    claims = session.get("claims")
    if not claims:
        return _start_login(_here())
    return render_template(
        "lms_dashboard.html", account=_account(claims), claims=claims, courses=COURSES.values()
    )


@bp.get("/courses/<slug>")
def course(slug: str) -> BaseResponse | str:
    found = COURSES.get(slug)
    if found is None:
        abort(404, "There is no such course in this LMS.")
    claims = session.get("claims")
    if not claims:
        return _start_login(_here())
    return render_template("lms_course.html", account=_account(claims), claims=claims, course=found)


@bp.post("/logout")
def logout() -> BaseResponse:
    session.clear()
    return redirect(f"{_config().base_url}/signed-out", 303)


@bp.get("/signed-out")
def signed_out() -> str:
    return render_template("lms_signed_out.html")


def _here() -> str:
    """This request's URL, built from the configured base URL, never the Host header."""
    query = request.query_string.decode("ascii", "replace")
    return f"{_config().base_url}{request.path}" + (f"?{query}" if query else "")


def _account(claims: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(key, label, value) rows for the account card; None where no claim carries it."""
    rows = []
    for key, label, names in ACCOUNT_FIELDS:
        value = next((claims[n] for n in names if claims.get(n) not in (None, "", [])), None)
        if isinstance(value, list):
            value = ", ".join(str(item) for item in value)
        rows.append((key, label, None if value is None else str(value)))
    return rows


_SIGN_IN_FAILED = (
    "The learning platform could not sign you in. Please start again from your portal."
)


def _error_page(status: int, message: str, code: str) -> tuple[str, int]:
    return render_template("lms_error.html", status=status, message=message, code=code), status


def _http_error(exc: HTTPException) -> tuple[str, int] | HTTPException:
    if exc.code is None or exc.code < 400:
        return exc
    return _error_page(exc.code, exc.description or exc.name, exc.name.lower().replace(" ", "_"))


def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response
