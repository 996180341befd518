"""A strict fake Moodle, for the Moodle adapter's tests: Moodle itself cannot run here.

This is not Moodle. It is a small HTTP server (werkzeug, in a thread, on a free
127.0.0.1 port) built from Moodle's documented web-service API and from reading
its source (``webservice/lib.php``, ``webservice/rest/locallib.php``,
``lib/external/classes/external_api.php``, ``user/externallib.php``,
``cohort/externallib.php``, ``enrol/manual/externallib.php``,
``course/externallib.php``, ``enrol/externallib.php``, ``lib/enrollib.php``) and the auth_userkey
plugin (``externallib.php``, ``auth.php``, ``classes/core_userkey_manager.php``).
It answers the way those sources say Moodle answers, and refuses what they say
Moodle refuses; anything it has not been taught is refused too.

    with FakeMoodle() as moodle:
        moodle.add_course("MATH101")
        lms = MoodleLms(moodle.base_url, moodle.token)
        ...
        assert moodle.users_with_idnumber("E1")

What it reproduces
------------------

The REST server (``/webservice/rest/server.php``), GET and POST merged as Moodle
does, in this order:

- ``moodlewsrestformat``: ``json``, or XML (Moodle's default) when absent;
- the token: missing or unknown -> ``moodle_exception`` / ``invalidtoken``;
  ``maintenance = True`` -> ``moodle_exception`` / ``sitemaintenance``;
- the function: empty -> ``invalid_parameter_exception`` / ``invalidparameter``;
  not a Moodle function -> ``dml_missing_record_exception`` / ``invalidrecord``
  (table ``external_functions``); a Moodle function outside the token's service
  (``service_functions``) -> ``webservice_access_exception`` / ``accessexception``;
- the parameters, checked like ``external_api::validate_parameters``: PHP-style
  array decoding (``users[0][username]``), missing required keys, unexpected
  keys, arrays where scalars belong and the reverse, PARAM_* cleaning (INT,
  BOOL, ALPHA, ALPHANUMEXT, USERNAME, NOTAGS, TEXT, LANG, AUTH, RAW...), each
  failure an ``invalid_parameter_exception`` / ``invalidparameter`` whose
  ``debuginfo`` is the path to the faulty key, as Moodle builds it;
- errors are a JSON object ``{"exception", "errorcode", "message"}`` (plus
  ``debuginfo``, as a site with debugging on sends it) with HTTP 200; a
  function that returns nothing answers ``null``.

The functions (``IMPLEMENTED``), with Moodle's parameter shapes, answers and errors:

- ``core_user_get_users_by_field`` (field id/idnumber/username/email, else
  ``coding_exception`` / ``codingerror``), ``core_user_create_users`` (blank
  names, username and email already taken, unknown auth plugin, an internal
  auth plugin without a password, invalid email; all or nothing; user
  idnumbers are *not* unique, as in Moodle), ``core_user_update_users`` (the
  ``suspended`` flag; the ``warnings`` answer of recent releases);
- ``core_cohort_get_cohorts``, ``core_cohort_create_cohorts`` (system context;
  duplicate idnumber refused), ``core_cohort_get_cohort_members``,
  ``core_cohort_add_cohort_members`` (cohort by id or idnumber, user by id or
  username, everything else a warning: code 1 bad type, 2 not found, 3 already
  a member), ``core_cohort_delete_cohort_members``;
- ``core_course_get_courses_by_field``, ``core_enrol_get_users_courses`` (only
  active enrolments: ``enrol_get_users_courses($userid, true, ...)``),
  ``core_enrol_get_enrolled_users`` (options ``onlyactive``, ``onlysuspended``,
  ``userfields``: ``onlysuspended`` lists the people whose every enrolment in the
  course is inactive, as ``get_enrolled_join`` selects them),
  ``enrol_manual_enrol_users`` (assignable roles, the course's manual
  enrolment instance: ``wsnoinstance``, ``wsusercannotassign``; all or nothing;
  on an existing enrolment ``enrol_plugin::enrol_user`` writes the status it is
  given, active unless ``suspend=1``, so it reactivates a suspended one),
  ``enrol_manual_unenrol_users``;
- ``auth_userkey_request_login_url`` (mapping field ``idnumber`` by default;
  ``User is not exist``; plugin disabled -> ``accessexception``): a one-time key,
  valid ``key_lifetime`` seconds, that replaces the person's earlier keys.

The browser side: ``GET /auth/userkey/login.php?key=...&wantsurl=...`` consumes
the key, starts a ``MoodleSession`` cookie, records the login in ``logins`` and
redirects (303, like Moodle's ``redirect()``) to ``wantsurl`` when it is a local
path, on the site's host or on ``allowed_redirect_hosts``, else to the site
root; a used, unknown or expired key gets Moodle's error page (404, errorcode
in the body). Any other GET is a page of the site: 200 for a session, else a
303 to ``/login/index.php``; ``pages`` records who saw what.

Failure injection: ``fail_next(n, status=503)`` answers the next n REST calls
with that status and an HTML body, doing nothing; ``delay_next(seconds,
function=None)`` runs the next REST call (of that function, if named), its change
made, and only then waits before answering, so a client that times out has still
changed the site.

An admin's hand: ``suspend_enrolment(course_id, user_id)`` suspends an enrolment as
a course admin does on the Participants page.

Not reproduced, and not to be relied on: enrolment start and end dates and
disabled enrolment instances (Moodle counts both as inactive, like a suspended
enrolment), several enrolments of one person in one course (one per
enrolment method; the fake keeps one), capabilities and context restrictions (the token's user may do everything), course categories other
than the default one, deleted users, what Moodle does when a suspended person
uses a userkey login URL, and the exact wording of some messages (errorcodes
are from the source, some English texts are ours). Read from the source but not
seen on a live site: the ``warningcode`` names of ``core_user_update_users``
other than ``usernotupdatednotexist``, the 404 status of Moodle's error page,
and the refusal of an enrolment for a user id that does not exist (the fake
answers ``invalidrecord``; Moodle's own check is deeper in ``role_assign``).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit
from xml.sax.saxutils import escape

from werkzeug.wrappers import Request, Response

from tests.services import HOST, Closing, ServiceError, WsgiThread

REST_PATH = "/webservice/rest/server.php"
USERKEY_LOGIN_PATH = "/auth/userkey/login.php"
LOGIN_PATH = "/login/index.php"
GUEST_ID, ADMIN_ID, SITE_COURSE_ID = 1, 2, 1
# Roles a site admin can assign in a course (manager, editingteacher, teacher, student).
ASSIGNABLE_ROLES = frozenset({1, 3, 4, 5})
# Auth plugins whose accounts keep a Moodle password (is_internal()).
INTERNAL_AUTHS = frozenset({"manual", "email"})
# user_enrolments.status (lib/enrollib.php).
ENROL_USER_ACTIVE, ENROL_USER_SUSPENDED = 0, 1
# The options core_enrol_get_enrolled_users reads that this fake implements; Moodle ignores
# names it does not know, but an option the fake was not taught is a test bug.
ENROLLED_USERS_OPTIONS = frozenset({"onlyactive", "onlysuspended", "userfields"})
IMPLEMENTED = frozenset(
    {
        "core_user_get_users_by_field",
        "core_user_create_users",
        "core_user_update_users",
        "core_cohort_get_cohorts",
        "core_cohort_create_cohorts",
        "core_cohort_get_cohort_members",
        "core_cohort_add_cohort_members",
        "core_cohort_delete_cohort_members",
        "core_course_get_courses_by_field",
        "core_enrol_get_users_courses",
        "core_enrol_get_enrolled_users",
        "enrol_manual_enrol_users",
        "enrol_manual_unenrol_users",
        "auth_userkey_request_login_url",
    }
)
# Real Moodle functions this fake does not implement: outside the token's service.
OTHER_MOODLE_FUNCTIONS = frozenset(
    {
        "core_webservice_get_site_info",
        "core_user_delete_users",
        "core_user_get_users",
        "core_course_create_courses",
        "core_course_get_courses",
        "core_cohort_delete_cohorts",
        "core_cohort_update_cohorts",
        "core_cohort_search_cohorts",
        "core_role_assign_roles",
    }
)
ACCESS_DEBUGINFO = (
    "Access to the function {name}() is not allowed. There could be multiple reasons for this: "
    "1. The service linked to the user token does not contain the function. [...]"
)


class FakeMoodleError(ServiceError):
    """The fake could not start, or a request hit a bug in it."""


# --- Moodle exceptions --------------------------------------------------------------------


class MoodleException(Exception):
    """What Moodle's REST server turns into ``{"exception", "errorcode", "message"}``."""

    def __init__(
        self, exception: str, errorcode: str, message: str, debuginfo: str | None = None
    ) -> None:
        super().__init__(message)
        self.exception = exception
        self.errorcode = errorcode
        self.message = message
        self.debuginfo = debuginfo


def invalid_parameter(debuginfo: str) -> MoodleException:
    return MoodleException(
        "invalid_parameter_exception",
        "invalidparameter",
        "Invalid parameter value detected",
        debuginfo,
    )


def missing_record(table: str, sql: str = "") -> MoodleException:
    return MoodleException(
        "dml_missing_record_exception",
        "invalidrecord",
        f"Can't find data record in database table {table}.",
        sql or None,
    )


def moodle_exception(errorcode: str, message: str, debuginfo: str | None = None) -> MoodleException:
    return MoodleException("moodle_exception", errorcode, message, debuginfo)


# --- PHP request decoding -----------------------------------------------------------------

_KEY_RE = re.compile(r"^([^\[]+)((?:\[[^\]]*\])*)$")


def php_decode(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Form fields as PHP's $_POST sees them: ``a[0][b]=v`` becomes nested arrays.

    PHP arrays are ordered maps; here a dict with string keys (``[]`` appends).
    """
    result: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY_RE.match(key)
        if not match:
            result[key] = value
            continue
        base, rest = match.group(1), match.group(2)
        segments = re.findall(r"\[([^\]]*)\]", rest)
        if not segments:
            result[base] = value
            continue
        node = result.get(base)
        if not isinstance(node, dict):
            node = result[base] = {}
        for index, segment in enumerate(segments):
            if segment == "":
                segment = str(sum(1 for k in node if k.isdigit()))
            if index == len(segments) - 1:
                node[segment] = value
            else:
                child = node.get(segment)
                if not isinstance(child, dict):
                    child = node[segment] = {}
                node = child
    return result


def _php_print_r(value: Any) -> str:
    if isinstance(value, dict):
        inner = "".join(f"    [{k}] => {_php_print_r(v)}\n" for k, v in value.items())
        return f"Array\n(\n{inner})\n"
    return str(value)


# --- external_api::validate_parameters ----------------------------------------------------

REQUIRED, DEFAULT, OPTIONAL = 1, 0, 2


@dataclass(frozen=True)
class Value:
    type: str
    required: int = REQUIRED
    default: Any = None
    allownull: bool = False


@dataclass(frozen=True)
class Single:
    keys: Mapping[str, Value | Single | Multiple]
    required: int = REQUIRED
    default: Any = None
    allownull: bool = False


@dataclass(frozen=True)
class Multiple:
    content: Value | Single | Multiple
    required: int = REQUIRED
    default: Any = None
    allownull: bool = False


Description = Value | Single | Multiple

_EMAIL_RE = re.compile(r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+$")
_TAG_RE = re.compile(r"<[^>]*>")


def validate_email(address: str) -> bool:
    return bool(_EMAIL_RE.match(address))


class Validator:
    """PARAM_* cleaning and structure checks, as Moodle's external_api does them."""

    def __init__(self, languages: Iterable[str]) -> None:
        self.languages = frozenset(languages)

    def clean(self, value: str, kind: str) -> Any:
        if kind in ("raw", "raw_trimmed"):
            return value.strip() if kind == "raw_trimmed" else value
        if kind == "int":
            match = re.match(r"^\s*([+-]?\d+)", value)
            return int(match.group(1)) if match else 0
        if kind == "bool":
            lowered = value.lower()
            if lowered in ("on", "yes", "true"):
                return 1
            if lowered in ("off", "no", "false"):
                return 0
            return 0 if value in ("", "0") else 1  # PHP's empty()
        if kind == "alpha":
            return re.sub(r"[^a-zA-Z]", "", value)
        if kind == "alphanum":
            return re.sub(r"[^a-zA-Z0-9]", "", value)
        if kind == "alphanumext":
            return re.sub(r"[^a-zA-Z0-9_-]", "", value)
        if kind == "username":
            cleaned = value.strip().lower().replace(" ", "")
            return re.sub(r"[^-.@_a-z0-9]", "", cleaned)
        if kind in ("notags", "text"):
            return _TAG_RE.sub("", value)
        if kind == "email":
            return value if validate_email(value) else ""
        if kind == "lang":
            return value if value in self.languages else ""
        if kind in ("auth", "plugin", "theme"):
            return value if re.match(r"^[a-z][a-z0-9_]*[a-z0-9]$", value) else ""
        if kind == "timezone":
            return value if re.match(r"^[A-Za-z0-9_/+:.-]+$", value) else ""
        raise FakeMoodleError(f"the fake has no PARAM type {kind!r}")

    def validate_param(self, value: Any, kind: str, allownull: bool, debuginfo: str) -> Any:
        if value is None:
            if allownull:
                return None
            raise invalid_parameter(debuginfo)
        if isinstance(value, dict):
            raise invalid_parameter(debuginfo)
        if isinstance(value, bool):
            value = "1" if value else "0"
        text = str(value)
        cleaned = self.clean(text, kind)
        if str(cleaned) != text:
            raise invalid_parameter(debuginfo)
        return cleaned

    def validate(self, description: Description, params: Any) -> Any:
        if params is None and description.allownull:
            return None
        if isinstance(description, Value):
            if isinstance(params, dict):
                raise invalid_parameter("Scalar type expected, array or object received.")
            if description.type == "bool" and (
                isinstance(params, bool) or params in (0, 1, "0", "1")
            ):
                return bool(int(params))
            debuginfo = (
                f'Invalid external api parameter: the value is "{params}", '
                f'the server was expecting "{description.type}" type'
            )
            return self.validate_param(params, description.type, description.allownull, debuginfo)
        if isinstance(description, Single):
            if not isinstance(params, dict):
                raise invalid_parameter(
                    f"Only arrays accepted. The bad value is: '{_php_print_r(params)}'"
                )
            params = dict(params)
            result: dict[str, Any] = {}
            for key, sub in description.keys.items():
                if key not in params:
                    if sub.required == REQUIRED:
                        raise invalid_parameter(f"Missing required key in single structure: {key}")
                    if sub.required == DEFAULT:
                        try:
                            result[key] = self.validate(sub, sub.default)
                        except MoodleException as exc:
                            raise invalid_parameter(
                                f"{key} => {exc.message}: {exc.debuginfo}"
                            ) from None
                else:
                    try:
                        result[key] = self.validate(sub, params[key])
                    except MoodleException as exc:
                        raise invalid_parameter(
                            f"{key} => {exc.message}: {exc.debuginfo}"
                        ) from None
                params.pop(key, None)
            if params:
                raise invalid_parameter(
                    f"Unexpected keys ({', '.join(params)}) detected in parameter array."
                )
            return result
        if not isinstance(params, dict | list):
            raise invalid_parameter(f"Only arrays accepted. The bad value is: '{params}'")
        items = params.values() if isinstance(params, dict) else params
        return [self.validate(description.content, item) for item in items]


# --- the parameter descriptions of the implemented functions ------------------------------


def _opt(kind: str) -> Value:
    return Value(kind, OPTIONAL)


_CUSTOM = Multiple(Single({"type": Value("alphanumext"), "value": Value("raw")}), OPTIONAL)
_PREFERENCES = Multiple(Single({"type": Value("raw"), "value": Value("raw")}), OPTIONAL)
_USER_OPTIONAL = {
    "maildisplay": _opt("int"),
    "city": _opt("text"),
    "country": _opt("alpha"),
    "timezone": _opt("timezone"),
    "description": _opt("raw"),
    "firstnamephonetic": _opt("notags"),
    "lastnamephonetic": _opt("notags"),
    "middlename": _opt("notags"),
    "alternatename": _opt("notags"),
    "interests": _opt("text"),
}
_USER_EXTRA = {
    "institution": _opt("text"),
    "department": _opt("text"),
    "phone1": _opt("notags"),
    "phone2": _opt("notags"),
    "address": _opt("text"),
}
_CATEGORYTYPE = Single({"type": Value("text"), "value": Value("raw")})


def descriptions(default_lang: str) -> dict[str, Single]:
    """Each function's parameters (external_function_parameters), from Moodle's source."""
    create_user = Single(
        {
            "createpassword": _opt("bool"),
            "username": Value("username"),
            "auth": Value("auth", DEFAULT, "manual"),
            "password": _opt("raw"),
            "firstname": Value("notags"),
            "lastname": Value("notags"),
            "email": Value("raw_trimmed"),
            **_USER_OPTIONAL,
            "idnumber": Value("raw", DEFAULT, ""),
            **_USER_EXTRA,
            "lang": Value("lang", DEFAULT, default_lang),
            "calendartype": Value("plugin", DEFAULT, "gregorian"),
            "theme": _opt("theme"),
            "mailformat": _opt("int"),
            "customfields": _CUSTOM,
            "preferences": _PREFERENCES,
        }
    )
    update_user = Single(
        {
            "id": Value("int"),
            "username": Value("username", OPTIONAL),
            "auth": Value("auth", OPTIONAL),
            "suspended": _opt("int"),
            "password": _opt("raw"),
            "firstname": _opt("notags"),
            "lastname": _opt("notags"),
            "email": _opt("raw_trimmed"),
            **_USER_OPTIONAL,
            "userpicture": _opt("int"),
            "idnumber": _opt("raw"),
            **_USER_EXTRA,
            "lang": _opt("lang"),
            "calendartype": _opt("plugin"),
            "theme": _opt("theme"),
            "mailformat": _opt("int"),
            "customfields": _CUSTOM,
            "preferences": _PREFERENCES,
        }
    )
    member_ref = Single({"type": Value("alphanumext"), "value": Value("raw")})
    return {
        "core_user_get_users_by_field": Single(
            {"field": Value("alpha"), "values": Multiple(Value("raw"))}
        ),
        "core_user_create_users": Single({"users": Multiple(create_user)}),
        "core_user_update_users": Single({"users": Multiple(update_user)}),
        "core_cohort_get_cohorts": Single(
            {"cohortids": Multiple(Value("int"), DEFAULT, default={})}
        ),
        "core_cohort_create_cohorts": Single(
            {
                "cohorts": Multiple(
                    Single(
                        {
                            "categorytype": _CATEGORYTYPE,
                            "name": Value("raw"),
                            "idnumber": Value("raw"),
                            "description": _opt("raw"),
                            "descriptionformat": Value("int", DEFAULT, 1),
                            "visible": _opt("bool"),
                            "theme": _opt("theme"),
                            "customfields": Multiple(
                                Single({"shortname": Value("alphanumext"), "value": Value("raw")}),
                                OPTIONAL,
                            ),
                        }
                    )
                )
            }
        ),
        "core_cohort_get_cohort_members": Single({"cohortids": Multiple(Value("int"))}),
        "core_cohort_add_cohort_members": Single(
            {"members": Multiple(Single({"cohorttype": member_ref, "usertype": member_ref}))}
        ),
        "core_cohort_delete_cohort_members": Single(
            {"members": Multiple(Single({"cohortid": Value("int"), "userid": Value("int")}))}
        ),
        "core_course_get_courses_by_field": Single(
            {"field": Value("alpha", DEFAULT, ""), "value": Value("raw", DEFAULT, "")}
        ),
        "core_enrol_get_users_courses": Single(
            {"userid": Value("int"), "returnusercount": Value("bool", DEFAULT, True)}
        ),
        "core_enrol_get_enrolled_users": Single(
            {
                "courseid": Value("int"),
                "options": Multiple(
                    Single({"name": Value("alphanumext"), "value": Value("raw")}),
                    DEFAULT,
                    default={},
                ),
            }
        ),
        "enrol_manual_enrol_users": Single(
            {
                "enrolments": Multiple(
                    Single(
                        {
                            "roleid": Value("int"),
                            "userid": Value("int"),
                            "courseid": Value("int"),
                            "timestart": _opt("int"),
                            "timeend": _opt("int"),
                            "suspend": _opt("int"),
                        }
                    )
                )
            }
        ),
        "enrol_manual_unenrol_users": Single(
            {
                "enrolments": Multiple(
                    Single(
                        {"userid": Value("int"), "courseid": Value("int"), "roleid": _opt("int")}
                    )
                )
            }
        ),
    }


# --- records ------------------------------------------------------------------------------


@dataclass
class Call:
    """One REST request as the fake decoded it (the token is not kept)."""

    function: str
    params: dict[str, Any]
    errorcode: str | None = None


@dataclass
class Login:
    """A browser that used a userkey login URL."""

    user_id: int
    idnumber: str
    wantsurl: str
    redirected_to: str


@dataclass
class _Key:
    user_id: int
    valid_until: float


@dataclass
class _Injected:
    failures: list[int] = field(default_factory=list)
    delays: list[tuple[float, str | None]] = field(default_factory=list)


# --- the fake -----------------------------------------------------------------------------


class FakeMoodle(Closing):
    """A strict fake Moodle on a free 127.0.0.1 port (started by the constructor)."""

    def __init__(
        self,
        *,
        token: str | None = None,
        languages: Iterable[str] = ("en", "en_us", "de", "fr", "pt_br"),
        default_lang: str = "en",
        auths: Iterable[str] = ("manual", "email", "nologin", "userkey", "oauth2", "oidc", "ldap"),
        allow_same_email: bool = False,
        service_functions: Iterable[str] | None = None,
        userkey_enabled: bool = True,
        userkey_mapping_field: str = "idnumber",
        key_lifetime: float = 60.0,
        allowed_redirect_hosts: Iterable[str] = (),
        debug: bool = True,
    ) -> None:
        self.token = token or secrets.token_hex(16)
        self.tokens = {self.token}
        self.languages = frozenset(languages)
        self.default_lang = default_lang
        self.auths = frozenset(auths) - {"mnet", "webservice"}
        self.allow_same_email = allow_same_email
        self.service_functions = (
            frozenset(service_functions) if service_functions is not None else IMPLEMENTED
        )
        self.userkey_enabled = userkey_enabled
        self.userkey_mapping_field = userkey_mapping_field
        self.key_lifetime = key_lifetime
        self.allowed_redirect_hosts = list(allowed_redirect_hosts)
        self.debug = debug
        self.maintenance = False
        self._validator = Validator(self.languages)
        self._descriptions = descriptions(default_lang)
        self._lock = threading.RLock()
        self._injected = _Injected()
        self._handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "core_user_get_users_by_field": self._get_users_by_field,
            "core_user_create_users": self._create_users,
            "core_user_update_users": self._update_users,
            "core_cohort_get_cohorts": self._get_cohorts,
            "core_cohort_create_cohorts": self._create_cohorts,
            "core_cohort_get_cohort_members": self._get_cohort_members,
            "core_cohort_add_cohort_members": self._add_cohort_members,
            "core_cohort_delete_cohort_members": self._delete_cohort_members,
            "core_course_get_courses_by_field": self._get_courses_by_field,
            "core_enrol_get_users_courses": self._get_users_courses,
            "core_enrol_get_enrolled_users": self._get_enrolled_users,
            "enrol_manual_enrol_users": self._enrol_users,
            "enrol_manual_unenrol_users": self._unenrol_users,
            "auth_userkey_request_login_url": self._request_login_url,
        }
        self.reset()
        self._http: WsgiThread | None = None
        self.port = 0
        self._start()

    # --- state ---------------------------------------------------------------------------

    def reset(self) -> None:
        """An empty site: the guest and admin users, the front page, no cohorts."""
        with self._lock:
            self.users: dict[int, dict[str, Any]] = {}
            self.cohorts: dict[int, dict[str, Any]] = {}
            self.cohort_members: set[tuple[int, int]] = set()
            self.courses: dict[int, dict[str, Any]] = {}
            self.enrolments: dict[tuple[int, int], int] = {}  # (courseid, userid) -> roleid
            # (courseid, userid) of enrolments whose status is ENROL_USER_SUSPENDED.
            self.suspended_enrolments: set[tuple[int, int]] = set()
            self.userkeys: dict[str, _Key] = {}
            self.sessions: dict[str, int] = {}
            self.calls: list[Call] = []
            self.logins: list[Login] = []
            self.pages: list[tuple[str, str]] = []  # (username, path)
            self.errors: list[str] = []
            self._next_user = 1
            self._next_cohort = 1
            self._next_course = 1
            self.add_user(username="guest", firstname="Guest user", lastname=" ", auth="manual")
            self.add_user(username="admin", firstname="Admin", lastname="User", auth="manual")
            self.courses[SITE_COURSE_ID] = {
                "id": SITE_COURSE_ID,
                "shortname": "site",
                "fullname": "Site",
                "idnumber": "",
                "manual": False,
                "visible": True,
            }
            self._next_course = 2

    def add_user(self, **fields: Any) -> int:
        """Add a user as a site admin would (no web-service checks); return its id."""
        with self._lock:
            user_id = self._next_user
            self._next_user += 1
            self.users[user_id] = {
                "id": user_id,
                "username": fields.get("username", f"user{user_id}"),
                "auth": fields.get("auth", "manual"),
                "firstname": fields.get("firstname", "First"),
                "lastname": fields.get("lastname", "Last"),
                "email": fields.get("email", f"user{user_id}@example.invalid"),
                "idnumber": fields.get("idnumber", ""),
                "department": fields.get("department", ""),
                "institution": fields.get("institution", ""),
                "city": fields.get("city", ""),
                "country": fields.get("country", ""),
                "lang": fields.get("lang", self.default_lang),
                "suspended": int(fields.get("suspended", 0)),
                "deleted": 0,
                "confirmed": 1,
            }
            return user_id

    def add_course(
        self,
        shortname: str,
        fullname: str | None = None,
        *,
        manual: bool = True,
        idnumber: str = "",
    ) -> int:
        """A course; ``manual=False`` leaves it without a manual enrolment instance."""
        with self._lock:
            course_id = self._next_course
            self._next_course += 1
            self.courses[course_id] = {
                "id": course_id,
                "shortname": shortname,
                "fullname": fullname or shortname,
                "idnumber": idnumber,
                "manual": manual,
                "visible": True,
            }
            return course_id

    def add_cohort(self, idnumber: str, name: str | None = None) -> int:
        with self._lock:
            cohort_id = self._next_cohort
            self._next_cohort += 1
            self.cohorts[cohort_id] = {
                "id": cohort_id,
                "idnumber": idnumber,
                "name": name or idnumber,
                "description": "",
                "visible": True,
            }
            return cohort_id

    def users_with_idnumber(self, idnumber: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(u) for u in self.users.values() if u["idnumber"] == idnumber]

    def cohort_id(self, idnumber: str) -> int | None:
        with self._lock:
            return next((c["id"] for c in self.cohorts.values() if c["idnumber"] == idnumber), None)

    def cohorts_of(self, user_id: int) -> set[str]:
        with self._lock:
            return {self.cohorts[c]["idnumber"] for c, u in self.cohort_members if u == user_id}

    def courses_of(self, user_id: int, *, active: bool = False) -> set[str]:
        """The shortnames of the user's enrolments; with ``active``, only the active ones."""
        with self._lock:
            return {
                self.courses[c]["shortname"]
                for c, u in self.enrolments
                if u == user_id and not (active and (c, u) in self.suspended_enrolments)
            }

    def suspend_enrolment(self, course_id: int, user_id: int) -> None:
        """Suspend an enrolment as a course admin does (Participants > Edit enrolment)."""
        with self._lock:
            if (course_id, user_id) not in self.enrolments:
                raise FakeMoodleError(f"user {user_id} is not enrolled in course {course_id}")
            self.suspended_enrolments.add((course_id, user_id))

    def user_by_username(self, username: str) -> dict[str, Any] | None:
        with self._lock:
            return next((dict(u) for u in self.users.values() if u["username"] == username), None)

    def start_session(self, user_id: int) -> str:
        """A ``MoodleSession`` for this user, as a login by an auth plugin's own page makes
        (``complete_user_login``); for plugins this fake does not serve itself."""
        with self._lock:
            session = secrets.token_hex(16)
            self.sessions[session] = user_id
            return session

    def functions_called(self) -> list[str]:
        with self._lock:
            return [call.function for call in self.calls]

    # --- failure injection ---------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """Answer the next ``n`` REST calls with ``status`` and an HTML page, doing nothing."""
        with self._lock:
            self._injected.failures.extend([status] * n)

    def delay_next(self, seconds: float, function: str | None = None) -> None:
        """Run the next REST call (of ``function``, if given), then wait ``seconds`` before
        answering it."""
        with self._lock:
            self._injected.delays.append((seconds, function))

    # --- URLs ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def rest_url(self) -> str:
        return self.base_url + REST_PATH

    # --- the WSGI application ------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            if request.path == REST_PATH:
                response = self._rest(request)
            elif request.path == USERKEY_LOGIN_PATH and request.method == "GET":
                response = self._userkey_login(request)
            elif request.method == "GET":
                response = self._page(request)
            else:
                response = Response("Method not allowed", status=405)
        except Exception as exc:  # a bug in the fake: fail loudly in the test
            self.errors.append(f"{type(exc).__name__}: {exc}")
            response = Response("fake Moodle bug", status=500)
        return response(environ, start_response)

    def _rest(self, request: Request) -> Response:
        with self._lock:
            status = self._injected.failures.pop(0) if self._injected.failures else None
        if status is not None:
            return Response(
                f"<html><body><h1>{status}</h1>The server is unavailable.</body></html>",
                status=status,
                content_type="text/html",
            )
        variables = php_decode(request.args.items(multi=True))
        variables.update(php_decode(request.form.items(multi=True)))
        restformat = variables.pop("moodlewsrestformat", "xml")
        if restformat not in ("xml", "json"):
            restformat = "xml"
        token = variables.pop("wstoken", None)
        function = variables.pop("wsfunction", None)
        for name in [k for k in variables if k.startswith("moodlewssetting")]:
            variables.pop(name)
        call = Call(function=str(function or ""), params=variables)
        with self._lock:
            delay = self._take_delay(call.function)
            self.calls.append(call)
            try:
                result = self._run(token, function, variables)
            except MoodleException as exc:
                call.errorcode = exc.errorcode
                body = self._error_body(exc, restformat)
            else:
                body = self._result_body(result, restformat)
        if delay is not None:
            time.sleep(delay)
        content_type = "application/json" if restformat == "json" else "application/xml"
        return Response(body, status=200, content_type=content_type)

    def _take_delay(self, function: str) -> float | None:
        for index, (seconds, only) in enumerate(self._injected.delays):
            if only is None or only == function:
                del self._injected.delays[index]
                return seconds
        return None

    def _run(self, token: Any, function: Any, params: dict[str, Any]) -> Any:
        if not isinstance(token, str) or token not in self.tokens:
            raise moodle_exception("invalidtoken", "Invalid token - token not found")
        if self.maintenance:
            raise moodle_exception(
                "sitemaintenance",
                "The site is undergoing maintenance and is currently not available",
            )
        if not function:
            raise invalid_parameter("Missing function name")
        name = str(function)
        if name not in IMPLEMENTED | OTHER_MOODLE_FUNCTIONS:
            raise missing_record(
                "external_functions", "SELECT * FROM {external_functions} WHERE name = ?"
            )
        if name not in self.service_functions or name not in IMPLEMENTED:
            raise MoodleException(
                "webservice_access_exception",
                "accessexception",
                "Access control exception",
                ACCESS_DEBUGINFO.format(name=name),
            )
        validated = self._validator.validate(self._description(name), params)
        snapshot = self._snapshot()
        try:
            return self._handlers[name](validated)
        except MoodleException:
            self._restore(snapshot)  # the delegated transaction is rolled back
            raise

    def _description(self, name: str) -> Single:
        if name == "auth_userkey_request_login_url":
            kinds = {"username": "username", "email": "email", "idnumber": "raw", "id": "int"}
            mapping = self.userkey_mapping_field
            return Single({"user": Single({mapping: Value(kinds[mapping])})})
        return self._descriptions[name]

    def _snapshot(self) -> tuple[Any, ...]:
        return (
            {k: dict(v) for k, v in self.users.items()},
            {k: dict(v) for k, v in self.cohorts.items()},
            set(self.cohort_members),
            dict(self.enrolments),
            set(self.suspended_enrolments),
            self._next_user,
            self._next_cohort,
        )

    def _restore(self, snapshot: tuple[Any, ...]) -> None:
        (
            self.users,
            self.cohorts,
            self.cohort_members,
            self.enrolments,
            self.suspended_enrolments,
            self._next_user,
            self._next_cohort,
        ) = snapshot

    def _error_body(self, exc: MoodleException, restformat: str) -> str:
        if restformat == "json":
            error: dict[str, Any] = {
                "exception": exc.exception,
                "errorcode": exc.errorcode,
                "message": exc.message,
            }
            if self.debug and exc.debuginfo:
                error["debuginfo"] = exc.debuginfo
            return json.dumps(error)
        debug = (
            f"<DEBUGINFO>{escape(exc.debuginfo)}</DEBUGINFO>\n"
            if self.debug and exc.debuginfo
            else ""
        )
        return (
            '<?xml version="1.0" encoding="UTF-8" ?>\n'
            f'<EXCEPTION class="{exc.exception}">\n'
            f"<ERRORCODE>{escape(exc.errorcode)}</ERRORCODE>\n"
            f"<MESSAGE>{escape(exc.message)}</MESSAGE>\n{debug}</EXCEPTION>\n"
        )

    def _result_body(self, result: Any, restformat: str) -> str:
        if restformat == "json":
            return json.dumps(result)
        return (
            f'<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>\n{_xmlize(result)}</RESPONSE>\n'
        )

    # --- core_user -------------------------------------------------------------------------

    def _user_details(self, user: dict[str, Any]) -> dict[str, Any]:
        details: dict[str, Any] = {
            "id": user["id"],
            "username": user["username"],
            "firstname": user["firstname"],
            "lastname": user["lastname"],
            "fullname": f"{user['firstname']} {user['lastname']}",
            "email": user["email"],
            "firstaccess": 0,
            "lastaccess": 0,
            "auth": user["auth"],
            "suspended": bool(user["suspended"]),
            "confirmed": bool(user["confirmed"]),
            "lang": user["lang"],
            "theme": "",
            "timezone": "99",
            "mailformat": 1,
            "description": "",
            "descriptionformat": 1,
            "profileimageurlsmall": f"{self.base_url}/theme/image.php/boost/core/1/u/f2",
            "profileimageurl": f"{self.base_url}/theme/image.php/boost/core/1/u/f1",
        }
        # user_get_user_details() leaves empty optional fields out.
        for name in ("idnumber", "department", "institution", "city", "country"):
            if user.get(name):
                details[name] = user[name]
        return details

    def _get_users_by_field(self, params: dict[str, Any]) -> Any:
        field_name = params["field"]
        kinds = {"id": "int", "idnumber": "raw", "username": "username", "email": "raw_trimmed"}
        if field_name not in kinds:
            raise MoodleException(
                "coding_exception",
                "codingerror",
                "Coding error detected, it must be fixed by a programmer: invalid field parameter",
                f"The search field '{field_name}' is not supported, look at the web service "
                "documentation",
            )
        wanted = set()
        for value in params["values"]:
            cleaned = self._validator.clean(str(value), kinds[field_name])
            if str(cleaned) != str(value):
                raise invalid_parameter(
                    f"The field '{field_name}' value is invalid: {value}(cleaned value: {cleaned})"
                )
            wanted.add(str(cleaned))
        found = [u for u in sorted(self.users.values(), key=lambda u: u["id"])]
        found = [u for u in found if str(u.get(field_name, "")) in wanted and not u["deleted"]]
        details = [self._user_details(u) for u in found]
        # Only users whose searched field is returned (user_get_user_details omits empty ones).
        return [d for d in details if d.get(field_name)]

    def _create_users(self, params: dict[str, Any]) -> Any:
        created = []
        for user in params["users"]:
            for name in ("username", "firstname", "lastname"):
                if user[name].strip() == "":
                    raise invalid_parameter(f"The field {name} cannot be blank")
            if any(u["username"] == user["username"] for u in self.users.values()):
                raise invalid_parameter(f"Username already exists: {user['username']}")
            if user["auth"] not in self.auths:
                raise invalid_parameter(f"Invalid authentication type: {user['auth']}")
            if user["lang"] not in self.languages:
                raise invalid_parameter(f"Invalid language code: {user['lang']}")
            if (
                user["auth"] in INTERNAL_AUTHS
                and not user.get("password")
                and not user.get("createpassword")
            ):
                raise invalid_parameter(
                    "Invalid password: you must provide a password, or set createpassword."
                )
            if not validate_email(user["email"]):
                raise invalid_parameter(f"Email address is invalid: {user['email']}")
            if not self.allow_same_email and any(
                u["email"].lower() == user["email"].lower() for u in self.users.values()
            ):
                raise invalid_parameter(f"Email address already exists: {user['email']}")
            # Moodle does not check that the idnumber is unique.
            fields = {
                k: v
                for k, v in user.items()
                if k not in ("password", "createpassword", "customfields", "preferences")
            }
            user_id = self.add_user(**fields)
            created.append({"id": user_id, "username": user["username"]})
        return created

    def _update_users(self, params: dict[str, Any]) -> Any:
        warnings = []
        for user in params["users"]:
            existing = self.users.get(user["id"])
            if existing is None or existing["deleted"]:
                warnings.append(
                    {
                        "item": "user",
                        "itemid": user["id"],
                        "warningcode": "usernotupdatednotexist",
                        "message": "User does not exist",
                    }
                )
                continue
            email = user.get("email")
            if email is not None and email != existing["email"]:
                if not validate_email(email):
                    warnings.append(self._user_warning(user["id"], "useremailinvalid", email))
                    continue
                if not self.allow_same_email and any(
                    u["email"].lower() == email.lower() and u["id"] != user["id"]
                    for u in self.users.values()
                ):
                    warnings.append(self._user_warning(user["id"], "useremailduplicate", email))
                    continue
            username = user.get("username")
            if username is not None and any(
                u["username"] == username and u["id"] != user["id"] for u in self.users.values()
            ):
                # The unique index on (mnethostid, username) refuses the write.
                raise MoodleException(
                    "dml_write_exception", "dmlwriteexception", "Error writing to database"
                )
            for name, value in user.items():
                if name in ("id", "password", "customfields", "preferences", "userpicture"):
                    continue
                existing[name] = int(value) if name == "suspended" else value
            if user.get("suspended"):
                self.sessions = {k: v for k, v in self.sessions.items() if v != user["id"]}
        return {"warnings": warnings}

    @staticmethod
    def _user_warning(user_id: int, code: str, email: str) -> dict[str, Any]:
        return {
            "item": "user",
            "itemid": user_id,
            "warningcode": code,
            "message": f"The email address {email} could not be used",
        }

    # --- core_cohort -----------------------------------------------------------------------

    def _cohort_info(self, cohort: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": cohort["id"],
            "name": cohort["name"],
            "idnumber": cohort["idnumber"],
            "description": cohort["description"],
            "descriptionformat": 1,
            "visible": cohort["visible"],
            "customfields": [],
        }

    def _get_cohorts(self, params: dict[str, Any]) -> Any:
        ids = params["cohortids"]
        cohorts = sorted(self.cohorts.values(), key=lambda c: c["id"])
        if ids:
            cohorts = [c for c in cohorts if c["id"] in ids]
        return [self._cohort_info(c) for c in cohorts]

    def _create_cohorts(self, params: dict[str, Any]) -> Any:
        created = []
        for cohort in params["cohorts"]:
            categorytype = cohort["categorytype"]
            if categorytype["type"] not in ("idnumber", "id", "system"):
                raise invalid_parameter(
                    "category type must be id, idnumber or system:" + categorytype["type"]
                )
            if categorytype["type"] == "id" and categorytype["value"] != "1":
                raise invalid_parameter(
                    f"category not exists: category id = {categorytype['value']}"
                )
            if categorytype["type"] == "idnumber":
                raise invalid_parameter(
                    f"category not exists: category idnumber = {categorytype['value']}"
                )
            if any(c["idnumber"] == cohort["idnumber"] for c in self.cohorts.values()):
                raise invalid_parameter(f"record already exists: idnumber={cohort['idnumber']}")
            cohort_id = self.add_cohort(cohort["idnumber"], cohort["name"])
            self.cohorts[cohort_id]["description"] = cohort.get("description", "")
            self.cohorts[cohort_id]["visible"] = bool(cohort.get("visible", True))
            info = self._cohort_info(self.cohorts[cohort_id])
            info.pop("customfields")
            created.append(info)
        return created

    def _get_cohort_members(self, params: dict[str, Any]) -> Any:
        members = []
        for cohort_id in params["cohortids"]:
            if cohort_id not in self.cohorts:
                raise missing_record("cohort", "SELECT * FROM {cohort} WHERE id = ?")
            users = [self.users[u] for c, u in self.cohort_members if c == cohort_id]
            users.sort(key=lambda u: (u["lastname"], u["firstname"]))
            members.append({"cohortid": cohort_id, "userids": [u["id"] for u in users]})
        return members

    def _add_cohort_members(self, params: dict[str, Any]) -> Any:
        warnings = []
        for member in params["members"]:
            cohorttype, usertype = member["cohorttype"], member["usertype"]
            if cohorttype["type"] not in ("id", "idnumber"):
                warnings.append(
                    {
                        "warningcode": "1",
                        "message": "invalid parameter: cohortype=" + cohorttype["type"],
                    }
                )
                continue
            if usertype["type"] not in ("id", "username"):
                warnings.append(
                    {
                        "warningcode": "1",
                        "message": "invalid parameter: usertype=" + usertype["type"],
                    }
                )
                continue
            cohort_id = next(
                (
                    c["id"]
                    for c in sorted(self.cohorts.values(), key=lambda c: c["id"])
                    if str(c[cohorttype["type"]]) == cohorttype["value"]
                ),
                None,
            )
            if cohort_id is None:
                warnings.append(
                    {
                        "warningcode": "2",
                        "message": f"cohort {cohorttype['type']}={cohorttype['value']} not exists",
                    }
                )
                continue
            user_id = next(
                (
                    u["id"]
                    for u in self.users.values()
                    if str(u[usertype["type"]]) == usertype["value"] and not u["deleted"]
                ),
                None,
            )
            if user_id is None:
                warnings.append(
                    {
                        "warningcode": "2",
                        "message": f"user {usertype['type']}={usertype['value']} not exists",
                    }
                )
                continue
            if (cohort_id, user_id) in self.cohort_members:
                warnings.append(
                    {
                        "warningcode": "3",
                        "message": (
                            f"record already exists: cohort({cohorttype['type']}="
                            f"{cohorttype['value']} {usertype['type']}={usertype['value']})"
                        ),
                    }
                )
                continue
            self.cohort_members.add((cohort_id, user_id))
        return {"warnings": warnings}

    def _delete_cohort_members(self, params: dict[str, Any]) -> Any:
        for member in params["members"]:
            if member["cohortid"] not in self.cohorts:
                raise missing_record("cohort", "SELECT * FROM {cohort} WHERE id = ?")
            user = self.users.get(member["userid"])
            if user is None or user["deleted"]:
                raise missing_record("user", "SELECT * FROM {user} WHERE id = ? AND deleted = ?")
            self.cohort_members.discard((member["cohortid"], member["userid"]))
        return None

    # --- courses and enrolments ------------------------------------------------------------

    def _course_info(self, course: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": course["id"],
            "fullname": course["fullname"],
            "displayname": course["fullname"],
            "shortname": course["shortname"],
            "categoryid": 1,
            "categoryname": "Category 1",
            "summary": "",
            "summaryformat": 1,
            "idnumber": course["idnumber"],
            "format": "topics",
            "visible": 1 if course["visible"] else 0,
            "enrollmentmethods": ["manual"] if course["manual"] else [],
        }

    def _get_courses_by_field(self, params: dict[str, Any]) -> Any:
        name, value = params["field"], params["value"]
        courses = [
            c
            for c in sorted(self.courses.values(), key=lambda c: c["id"])
            if c["id"] != SITE_COURSE_ID
        ]
        if name == "":
            pass
        elif name in ("id", "category"):
            number = self._validator.clean(value, "int")
            courses = [c for c in courses if (c["id"] if name == "id" else 1) == number]
        elif name == "ids":
            ids = {int(x) for x in re.findall(r"\d+", value)}
            courses = [c for c in courses if c["id"] in ids]
        elif name in ("shortname", "idnumber"):
            courses = [c for c in courses if c[name] == value]
        else:
            raise invalid_parameter("Invalid field name")
        return {"courses": [self._course_info(c) for c in courses], "warnings": []}

    def _get_users_courses(self, params: dict[str, Any]) -> Any:
        # enrol_get_users_courses($userid, true, '*'): only active enrolments.
        user_id = params["userid"]
        result = []
        for (course_id, enrolled), _role in sorted(self.enrolments.items()):
            if enrolled != user_id or (course_id, enrolled) in self.suspended_enrolments:
                continue
            info = self._course_info(self.courses[course_id])
            info.pop("enrollmentmethods")
            if params["returnusercount"]:
                info["enrolledusercount"] = sum(1 for c, _ in self.enrolments if c == course_id)
            result.append(info)
        return result

    def _enrol_users(self, params: dict[str, Any]) -> Any:
        for enrolment in params["enrolments"]:
            course = self.courses.get(enrolment["courseid"])
            if course is None:
                raise invalid_parameter("Context does not exist")
            if enrolment["roleid"] not in ASSIGNABLE_ROLES:
                raise moodle_exception(
                    "wsusercannotassign",
                    f"You don't have the permission to assign this role ({enrolment['roleid']}) "
                    f"to this user ({enrolment['userid']}) in this course"
                    f"({enrolment['courseid']}).",
                )
            if not course["manual"]:
                raise moodle_exception(
                    "wsnoinstance",
                    "Manual enrolment plugin instance doesn't exist or is disabled for the "
                    f"course (id = {enrolment['courseid']})",
                )
            user = self.users.get(enrolment["userid"])
            if user is None or user["deleted"]:
                raise missing_record("user", "SELECT * FROM {user} WHERE id = ?")
            key = (enrolment["courseid"], enrolment["userid"])
            self.enrolments[key] = enrolment["roleid"]
            # enrol_user() on an existing enrolment writes the given status: the web
            # service passes ENROL_USER_ACTIVE unless suspend=1, so it reactivates.
            if enrolment.get("suspend"):
                self.suspended_enrolments.add(key)
            else:
                self.suspended_enrolments.discard(key)
        return None

    def _get_enrolled_users(self, params: dict[str, Any]) -> Any:
        options = {o["name"]: o["value"] for o in params["options"]}
        unknown = set(options) - ENROLLED_USERS_OPTIONS
        if unknown:
            raise FakeMoodleError(f"core_enrol_get_enrolled_users option not taught: {unknown}")
        only_active = options.get("onlyactive", "0") not in ("", "0")
        only_suspended = options.get("onlysuspended", "0") not in ("", "0")
        if only_active and only_suspended:
            # get_enrolled_join() throws a coding_exception for both.
            raise MoodleException(
                "coding_exception",
                "codingerror",
                "Coding error detected, it must be fixed by a programmer: Both onlyactive and "
                "onlysuspended are set, this is probably not what you want!",
            )
        course_id = params["courseid"]
        if course_id == SITE_COURSE_ID:
            raise FakeMoodleError("core_enrol_get_enrolled_users on the front page: not taught")
        if course_id not in self.courses:
            # $DB->get_record('course', ..., MUST_EXIST)
            raise missing_record("course", "SELECT * FROM {course} WHERE id = ?")
        fields = [f for f in options.get("userfields", "").split(",") if f]
        result = []
        for (course, user_id), _role in sorted(self.enrolments.items()):
            suspended = (course, user_id) in self.suspended_enrolments
            if (
                course != course_id
                or (only_active and suspended)
                or (only_suspended and not suspended)
            ):
                continue
            details = self._user_details(self.users[user_id])
            # user_get_user_details() with userfields returns those fields (id always).
            result.append(
                {k: v for k, v in details.items() if not fields or k == "id" or k in fields}
            )
        return result

    def _unenrol_users(self, params: dict[str, Any]) -> Any:
        for enrolment in params["enrolments"]:
            course = self.courses.get(enrolment["courseid"])
            if course is None:
                raise missing_record("course", "SELECT * FROM {course} WHERE id = ?")
            if not course["manual"]:
                raise moodle_exception(
                    "wsnoinstance",
                    "Manual enrolment plugin instance doesn't exist or is disabled for the "
                    f"course (id = {enrolment['courseid']})",
                )
            if enrolment["userid"] not in self.users:
                raise invalid_parameter(f"User id not exist: {enrolment['userid']}")
            self.enrolments.pop((enrolment["courseid"], enrolment["userid"]), None)
            self.suspended_enrolments.discard((enrolment["courseid"], enrolment["userid"]))
        return None

    # --- auth_userkey ----------------------------------------------------------------------

    def _request_login_url(self, params: dict[str, Any]) -> Any:
        if not self.userkey_enabled:
            raise MoodleException(
                "webservice_access_exception",
                "accessexception",
                "Access control exception",
                "User key authentication is disabled",
            )
        mapping = self.userkey_mapping_field
        value = params["user"].get(mapping)
        if value in (None, "", 0):
            raise invalid_parameter(f'Required field "{mapping}" is not set or empty.')
        matches = [
            u
            for u in sorted(self.users.values(), key=lambda u: u["id"])
            if str(u[mapping]) == str(value) and not u["deleted"]
        ]
        if not matches:
            raise invalid_parameter("User is not exist")
        user_id = matches[0]["id"]
        # create_key() deletes the person's earlier keys first.
        self.userkeys = {k: v for k, v in self.userkeys.items() if v.user_id != user_id}
        key = secrets.token_hex(16)
        self.userkeys[key] = _Key(user_id, time.time() + self.key_lifetime)
        return {"loginurl": f"{self.base_url}{USERKEY_LOGIN_PATH}?key={key}"}

    def _redirect_url(self, wantsurl: str) -> str:
        if not wantsurl:
            return self.base_url
        if wantsurl.startswith("/") and not wantsurl.startswith("//"):
            return wantsurl
        host = urlsplit(wantsurl).hostname
        if not host:
            return self.base_url
        if host.lower() == HOST:
            return wantsurl
        if any(host.lower() == h.strip().lower() for h in self.allowed_redirect_hosts):
            return wantsurl
        return self.base_url

    def _error_page(self, errorcode: str) -> Response:
        return Response(
            f"<html><body><div class='errorbox'>{errorcode}</div></body></html>",
            status=404,
            content_type="text/html",
        )

    def _userkey_login(self, request: Request) -> Response:
        if not self.userkey_enabled:
            return self._error_page("pluginisdisabled")
        if "key" not in request.args:
            return self._error_page("missingparam")
        key = re.sub(r"[^a-zA-Z0-9]", "", request.args["key"])
        wantsurl = request.args.get("wantsurl", "")
        if not re.match(r"^(https?://[^\s]+|/[^\s]*)$", wantsurl):
            wantsurl = ""  # PARAM_URL cleaning
        session = request.cookies.get("MoodleSession")
        with self._lock:
            record = self.userkeys.get(key)
            if record is None:
                if session in self.sessions:
                    self.sessions.pop(session)
                return self._error_page("invalidkey")
            if record.valid_until < time.time():
                return self._error_page("expiredkey")
            current = self.sessions.get(session) if session else None
            if current is not None and current != record.user_id:
                # Another user is logged in: log out, then come back to the same URL.
                self.sessions.pop(session or "")
                query = {"key": key, **({"wantsurl": wantsurl} if wantsurl else {})}
                response = Response(status=303)
                response.headers["Location"] = f"{USERKEY_LOGIN_PATH}?{urlencode(query)}"
                response.delete_cookie("MoodleSession")
                return response
            self.userkeys = {k: v for k, v in self.userkeys.items() if v.user_id != record.user_id}
            user = self.users[record.user_id]
            target = self._redirect_url(wantsurl)
            self.logins.append(Login(user["id"], user["idnumber"], wantsurl, target))
            new_session = secrets.token_hex(16)
            self.sessions[new_session] = user["id"]
        response = Response(status=303)
        response.headers["Location"] = target
        response.set_cookie("MoodleSession", new_session, httponly=True)
        return response

    def _page(self, request: Request) -> Response:
        if request.path == LOGIN_PATH:
            return Response(
                "<html><body>Log in to the site</body></html>", content_type="text/html"
            )
        with self._lock:
            user_id = self.sessions.get(request.cookies.get("MoodleSession", ""))
            if user_id is None:
                response = Response(status=303)
                response.headers["Location"] = LOGIN_PATH
                return response
            username = self.users[user_id]["username"]
            self.pages.append((username, request.full_path.rstrip("?")))
        return Response(
            f"<html><body>{escape(request.path)} for {escape(username)}</body></html>",
            content_type="text/html",
        )

    # --- lifecycle -----------------------------------------------------------------------

    def _start(self) -> None:
        self._http = WsgiThread(self._wsgi, "fake-moodle")
        self.port = self._http.port

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()

    def check(self) -> None:
        """Fail if a request hit a bug in the fake."""
        if self.errors:
            raise FakeMoodleError("the fake Moodle failed:\n" + "\n".join(self.errors))


def _xmlize(value: Any) -> str:
    """Moodle's REST XML for a result (webservice_rest_server::xmlize_result)."""
    if value is None:
        return ""
    if isinstance(value, dict):
        keys = "".join(f'<KEY name="{k}">{_xmlize_value(v)}</KEY>\n' for k, v in value.items())
        return f"<SINGLE>\n{keys}</SINGLE>\n"
    if isinstance(value, list):
        return "<MULTIPLE>\n" + "".join(_xmlize(v) for v in value) + "</MULTIPLE>\n"
    return _xmlize_value(value)


def _xmlize_value(value: Any) -> str:
    if isinstance(value, dict | list):
        return _xmlize(value)
    if value is None:
        return '<VALUE null="null"/>\n'
    if isinstance(value, bool):
        value = int(value)
    return f"<VALUE>{escape(str(value))}</VALUE>\n"
