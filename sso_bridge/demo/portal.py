"""Demo code, not part of the product: "Acme HR", a homegrown portal that sends people to training.

It does what a portal developer does after reading docs/token-handoff.md: sign a
short-lived handoff token for the signed-in employee with the portal's Ed25519 key,
and let the browser post it to the bridge. Signing in to the portal itself is a
switcher between demo employees, kept in a cookie: this is a demo.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from jinja2 import StrictUndefined
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import OKPKey
from werkzeug.wrappers import Response as BaseResponse

from .catalogue import COURSES

TOKEN_LIFETIME = 60
# Free-text profile fields end up in the LMS; the bridge refuses control characters, and so
# does the portal, with a message, instead of sending a token the bridge will refuse.
PROFILE_VALUE = re.compile(r"^[^\x00-\x1f\x7f]{1,80}$")


@dataclass(frozen=True)
class Employee:
    """One person in the HR system."""

    employee_id: str
    email: str
    given_name: str
    family_name: str
    department: str
    location: str
    locale: str
    manager_id: str | None
    job_title: str
    groups: tuple[str, ...]
    employment_status: str = "active"

    @property
    def name(self) -> str:
        return f"{self.given_name} {self.family_name}"

    def profile_claims(self) -> dict[str, Any]:
        """The profile claims of a handoff token (docs/token-handoff.md)."""
        claims: dict[str, Any] = {
            "email": self.email,
            "given_name": self.given_name,
            "family_name": self.family_name,
            "name": self.name,
            "department": self.department,
            "location": self.location,
            "locale": self.locale,
            "manager_id": self.manager_id,
            "job_title": self.job_title,
            "groups": list(self.groups),
            "employment_status": self.employment_status,
        }
        return {key: value for key, value in claims.items() if value is not None}


DEMO_EMPLOYEES: dict[str, Employee] = {
    person.employee_id: person
    for person in (
        Employee(
            "E1001",
            "ada.lovelace@acme.example",
            "Ada",
            "Lovelace",
            "Engineering",
            "London",
            "en-GB",
            "E1002",
            "Principal Engineer",
            ("engineering", "staff"),
        ),
        Employee(
            "E1002",
            "grace.hopper@acme.example",
            "Grace",
            "Hopper",
            "Operations",
            "Berlin",
            "de-DE",
            "E1000",
            "Head of Operations",
            ("managers", "operations", "staff"),
        ),
        Employee(
            "E1003",
            "alan.turing@acme.example",
            "Alan",
            "Turing",
            "Research",
            "Manchester",
            "en-GB",
            "E1002",
            "Research Scientist",
            ("research", "staff"),
        ),
        Employee(
            "E1004",
            "mallory.leaver@acme.example",
            "Mallory",
            "Leaver",
            "Sales",
            "Leeds",
            "en-GB",
            "E1002",
            "Account Executive",
            ("sales", "staff"),
            employment_status="terminated",
        ),
    )
}


@dataclass(frozen=True)
class PortalConfig:
    """How the portal is registered with the bridge."""

    bridge_url: str
    connection_id: str
    issuer: str
    kid: str
    private_key_pem: bytes
    secret_key: str
    base_url: str

    @property
    def token_url(self) -> str:
        """The bridge's endpoint for this portal: also the token's audience."""
        return f"{self.bridge_url}/token/{self.connection_id}"


class Directory:
    """The portal's employees, in memory: edits last until the process ends."""

    def __init__(self, employees: Mapping[str, Employee]) -> None:
        self._people = dict(employees)
        self._lock = threading.Lock()

    def all(self) -> list[Employee]:
        with self._lock:
            return list(self._people.values())

    def get(self, employee_id: str | None) -> Employee | None:
        with self._lock:
            return self._people.get(employee_id or "")

    def update(self, employee_id: str, **changes: Any) -> Employee:
        with self._lock:
            person = replace(self._people[employee_id], **changes)
            self._people[employee_id] = person
            return person


@dataclass(frozen=True)
class Portal:
    """What the portal app keeps in ``app.extensions["demo_portal"]``."""

    config: PortalConfig
    directory: Directory
    key: OKPKey


bp = Blueprint("portal", __name__)


def create_portal_app(
    config: PortalConfig, employees: Mapping[str, Employee] | None = None
) -> Flask:
    """The Acme HR portal as a WSGI app, to be mounted at the path of ``config.base_url``."""
    app = Flask(__name__, static_folder="static", template_folder="templates")
    base = urlsplit(config.base_url)
    app.config.update(
        SECRET_KEY=config.secret_key,
        SESSION_COOKIE_NAME="demo_portal_session",
        SESSION_COOKIE_PATH=base.path.rstrip("/") or "/",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=base.scheme == "https",
    )
    app.extensions["demo_portal"] = Portal(
        config=config,
        directory=Directory(DEMO_EMPLOYEES if employees is None else employees),
        key=OKPKey.import_key(config.private_key_pem),
    )
    app.register_blueprint(bp)
    app.before_request(_check_csrf)
    app.after_request(_security_headers)
    app.jinja_env.globals["csrf_token"] = _csrf_token
    # Undefined template variables are errors, not silently empty strings.
    app.jinja_env.undefined = StrictUndefined
    return app


def mint_handoff_token(
    portal: Portal, person: Employee, next_path: str | None, now: float | None = None
) -> str:
    """A signed handoff token for ``person``, valid for a minute."""
    iat = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": portal.config.issuer,
        "aud": portal.config.token_url,
        "sub": person.employee_id,
        "iat": iat,
        "exp": iat + TOKEN_LIFETIME,
        "jti": str(uuid.uuid4()),
        **person.profile_claims(),
    }
    if next_path:
        # Signed as well as sent in the form: a signed deep link cannot be swapped in transit.
        claims["next"] = next_path
    header = {"alg": "EdDSA", "typ": "handoff+jwt", "kid": portal.config.kid}
    with warnings.catch_warnings():
        # joserfc flags the RFC 9864 rename of "EdDSA"; it is the name the bridge expects.
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.encode(header, claims, portal.key, algorithms=["EdDSA"])


def _portal() -> Portal:
    return current_app.extensions["demo_portal"]  # type: ignore[no-any-return]


def _me() -> Employee:
    directory = _portal().directory
    person = directory.get(session.get("employee_id"))
    return person or directory.all()[0]


@bp.app_context_processor
def _inject() -> dict[str, Any]:
    return {"me": _me(), "employees": _portal().directory.all()}


@bp.get("/")
def home() -> str:
    return render_template("portal_home.html", tab="home")


@bp.post("/switch")
def switch() -> BaseResponse:
    person = _portal().directory.get(request.form.get("employee_id"))
    if person is None:
        abort(400)
    session["employee_id"] = person.employee_id
    flash(f"You are now signed in as {person.name}.")
    return redirect(url_for(".home"), 303)


@bp.get("/training")
def training() -> str:
    return render_template("portal_training.html", tab="training", courses=COURSES.values())


@bp.get("/training/open")
def open_training() -> str:
    """The handoff page: a form the browser posts to the bridge by itself."""
    slug = request.args.get("course")
    if slug is not None and slug not in COURSES:
        abort(404)
    # The portal chooses the deep link from its own list: it never forwards a path it was given.
    next_path = f"/courses/{slug}" if slug else None
    portal = _portal()
    token = mint_handoff_token(portal, _me(), next_path)
    return render_template(
        "portal_launch.html",
        tab="training",
        action=portal.config.token_url,
        token=token,
        next_path=next_path or "",
        course=COURSES.get(slug or ""),
    )


@bp.route("/profile", methods=["GET", "POST"])
def profile() -> BaseResponse | str | tuple[str, int]:
    me = _me()
    if request.method == "POST":
        department = request.form.get("department", "").strip()
        location = request.form.get("location", "").strip()
        if not (PROFILE_VALUE.match(department) and PROFILE_VALUE.match(location)):
            flash(
                "Department and location need 1 to 80 characters, without control characters.",
                "error",
            )
            return render_template("portal_profile.html", tab="profile"), 400
        _portal().directory.update(me.employee_id, department=department, location=location)
        flash("Profile saved. Open Training to see the change in the learning platform.")
        return redirect(url_for(".profile"), 303)
    return render_template("portal_profile.html", tab="profile")


def _csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]  # type: ignore[no-any-return]


def _check_csrf() -> None:
    # SameSite=Lax already keeps the cookie off cross-site POSTs; the token also covers
    # browsers that do not enforce SameSite, so the demo shows the complete pattern.
    if request.method != "POST":
        return
    expected = session.get("csrf")
    sent = request.form.get("csrf_token", "")
    if not expected or not hmac.compare_digest(expected, sent):
        abort(400, "The form expired. Please reload the page and try again.")


def _security_headers(response: Response) -> Response:
    bridge = urlsplit(_portal().config.bridge_url)
    # No inline script anywhere: the auto-submit is a static file, so script-src stays 'self'.
    # form-action names the bridge, the one other place a portal form may post to. Browsers
    # also hold the redirects after the post to it: a portal whose LMS is on another origin
    # must list that origin too (here bridge, portal and LMS share one).
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"form-action 'self' {bridge.scheme}://{bridge.netloc}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Not "no-referrer" (nor "same-origin"): with those, browsers send `Origin: null` on
    # the cross-origin POST to the bridge, which then cannot tell the portal's page from a
    # stranger's and refuses the token (origin_not_allowed). This policy sends the origin
    # only, never the path.
    response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    if request.endpoint != "static":
        # The handoff page holds a live token: never keep it in a cache or the history.
        response.headers["Cache-Control"] = "no-store"
    return response
