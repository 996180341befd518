"""The Moodle adapter: Moodle's web services over REST, with a token.

Every call is a form POST to ``<base_url>/webservice/rest/server.php`` carrying
``wstoken``, ``wsfunction`` and ``moodlewsrestformat=json`` in the body (never in
the URL, so the token stays out of access logs), with array parameters in
Moodle's encoding (``users[0][username]=...``). The token's user needs a
service with these functions:

- ``core_user_get_users_by_field``, ``core_user_create_users``,
  ``core_user_update_users`` (the account; ``idnumber`` is the lookup key, and
  the token's user needs ``moodle/user:update`` for Moodle to return it);
- ``core_cohort_get_cohorts``, ``core_cohort_get_cohort_members``,
  ``core_cohort_add_cohort_members``, ``core_cohort_delete_cohort_members`` and,
  when ``create_cohorts`` is on, ``core_cohort_create_cohorts`` (groups are
  site cohorts, named by their cohort ``idnumber``);
- ``core_course_get_courses_by_field``, ``core_enrol_get_users_courses``,
  ``core_enrol_get_enrolled_users``, ``enrol_manual_enrol_users``,
  ``enrol_manual_unenrol_users`` (courses, by shortname, or ``id:<n>`` for a
  course id; the course needs a manual enrolment instance);
- ``auth_userkey_request_login_url`` with ``login="userkey"`` (the auth_userkey
  plugin, its mapping field set to ``idnumber``).

The handoff: with ``login="userkey"`` the bridge asks auth_userkey for a
one-time login URL and appends ``wantsurl`` (the page the person asked for);
with ``login="oidc"`` `login_url` returns None and the person signs in to
Moodle through the bridge's own OpenID Provider: the auth_oidc plugin matches
the account this adapter created by its user name, the e-mail address in lower
case (``sso_bridge/handoff.py`` says where the person is sent).

Failures: timeouts, connection errors, HTTP 5xx and 429, and Moodle's
``sitemaintenance`` are `LmsUnavailable` (the caller retries); any other Moodle
exception (a JSON object with ``exception``, which Moodle sends with HTTP 200)
is `LmsRejected` with Moodle's ``errorcode`` in the detail and in
``context["errorcode"]``. The token never appears in an error.

How the groups of an account are read: Moodle has no web service for "the
cohorts of a user", so `find` lists the cohorts (``core_cohort_get_cohorts``,
cached for ``cache_ttl`` seconds) and asks ``core_cohort_get_cohort_members``
for all of them in one call. ``managed_cohorts`` narrows that to the cohorts
the bridge's rules name (advisable on a site with many cohorts); a cohort
outside it is never reported, so never removed.

How the courses of an account are read, and spelled: ``core_enrol_get_users_courses``
lists the active enrolments, each with its id and shortname. A rule may name a
course either way, and provisioning compares names as strings, so each course is
reported under the names the rules (``rule_courses``) give it, and under both
spellings only when no rule names it (so that a grant made under a spelling since
dropped from the rules is still found and taken back).

An enrolment an admin suspended (or whose dates have run out) is not in that
list, and ``enrol_manual_enrol_users`` on it would make it active again:
`enrol` first asks ``core_enrol_get_enrolled_users`` for the course's inactive
enrolments and leaves such a one as it is.

Moodle cannot run where this project is tested: the tests run against a strict
fake Moodle built from Moodle's documented web-service API and source
(``tests/fake_moodle.py``), not against a real site.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import requests
import urllib3

from ..fetch import FetchTooLarge, FetchTooSlow, outbound_session, read_bounded
from .base import (
    COURSES,
    GROUPS,
    LOGIN_URL,
    SUSPEND,
    AccountProfile,
    LmsAccount,
    LmsMembershipHeld,
    LmsRejected,
    LmsTargetMissing,
    LmsUnavailable,
    call_timeout,
)

REST_PATH = "/webservice/rest/server.php"
# The largest answer read (every cohort's members, on a big site, is the biggest one):
# more is a broken or hostile server, not a bigger site.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
STUDENT_ROLE_ID = 5  # "student" in a stock Moodle
# Moodle requires both names; this stands in for one the person does not have.
MISSING_NAME = "-"
# Moodle errorcodes that mean "try again later", not "no".
TRANSIENT_ERRORCODES = frozenset({"sitemaintenance"})
# add_cohort_members warning codes (cohort/externallib.php): 2 = no such cohort or
# user, 3 = already a member.
WARNING_NOT_FOUND = "2"
WARNING_ALREADY_MEMBER = "3"
COURSE_ID_PREFIX = "id:"
_COURSE_ID_RE = re.compile(re.escape(COURSE_ID_PREFIX) + r"([0-9]+)", re.ASCII)
_LANG_RE = re.compile(r"^[a-z]{2,3}(?:_[a-z0-9]+)*$")

Login = Literal["userkey", "oidc"]

CourseKey = tuple[Literal["id", "shortname"], str]


@dataclass(frozen=True)
class _Course:
    id: int
    shortname: str


def course_key(name: str) -> CourseKey:
    """What a rule's course name points at: ``id:042`` -> ("id", "42"), else the shortname."""
    match = _COURSE_ID_RE.fullmatch(name)
    return ("id", str(int(match.group(1)))) if match else ("shortname", name)


def moodle_lang(language: str | None) -> str | None:
    """A Moodle language code from a BCP 47 tag: "en-US" -> "en_us", "de" -> "de"."""
    if not language:
        return None
    code = language.strip().replace("-", "_").lower()
    return code if _LANG_RE.match(code) else None


def encode_params(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Moodle's REST encoding: nested dicts and lists as ``a[0][b]=v`` form fields.

    Booleans are sent as 1/0 (what Moodle's PARAM_BOOL accepts); None is left out.
    """
    pairs: list[tuple[str, str]] = []

    def walk(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for name, item in value.items():
                walk(f"{key}[{name}]", item)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(f"{key}[{index}]", item)
        elif isinstance(value, bool):
            pairs.append((key, "1" if value else "0"))
        else:
            pairs.append((key, str(value)))

    for name, value in params.items():
        walk(name, value)
    return pairs


class _Cache:
    """A small name -> id map that expires as a whole after ``ttl`` seconds."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._items: dict[str, int] | None = None
        self._loaded = 0.0

    def get_all(self) -> dict[str, int] | None:
        with self._lock:
            if self._items is None or time.monotonic() - self._loaded > self._ttl:
                return None
            return dict(self._items)

    def set_all(self, items: dict[str, int]) -> None:
        with self._lock:
            self._items = dict(items)
            self._loaded = time.monotonic()

    def clear(self) -> None:
        with self._lock:
            self._items = None


class MoodleLms:
    """Provision people into Moodle through its REST web services."""

    name: ClassVar[str] = "moodle"
    capabilities: ClassVar[frozenset[str]] = frozenset({GROUPS, COURSES, SUSPEND, LOGIN_URL})

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        login: Login = "userkey",
        auth: str | None = None,
        student_role_id: int = STUDENT_ROLE_ID,
        managed_cohorts: Iterable[str] | None = None,
        create_cohorts: bool = True,
        languages: Iterable[str] | None = None,
        cache_ttl: float = 300.0,
        rule_courses: Iterable[str] = (),
        session: requests.Session | None = None,
    ) -> None:
        """Talk to the Moodle at ``base_url`` with a web-service ``token``.

        ``auth`` is the Moodle auth plugin new accounts get: by default
        ``userkey`` with ``login="userkey"`` and ``oidc`` with ``login="oidc"``
        (``oauth2`` for Moodle's own OAuth 2 plugin). ``languages`` are the
        language packs installed on the site: a person's language is sent only
        if installed, falling back to its base language ("en_us" -> "en"), and
        left out otherwise (Moodle refuses a language it does not have). Without
        it the mapped code is sent as is. ``rule_courses`` are the course names
        the rules use: `find` reports courses in those spellings.
        """
        if login not in ("userkey", "oidc"):
            raise ValueError(f"login must be 'userkey' or 'oidc', not {login!r}")
        if not token:
            raise ValueError("a Moodle web-service token is required")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.login = login
        self.auth = auth or ("userkey" if login == "userkey" else "oidc")
        self.student_role_id = student_role_id
        self.managed_cohorts = frozenset(managed_cohorts) if managed_cohorts is not None else None
        self.create_cohorts = create_cohorts
        self.languages = frozenset(languages) if languages is not None else None
        self._token = token
        # Never through a proxy from the environment: the token goes to Moodle, or through
        # the configured outbound proxy (build_adapter passes a session set up for it), only.
        self._session = session or outbound_session(None)
        self._session.trust_env = False
        self._cohorts = _Cache(cache_ttl)
        self._spellings: dict[CourseKey, frozenset[str]] = {}
        for name in rule_courses:
            key = course_key(name)
            self._spellings[key] = self._spellings.get(key, frozenset()) | {name}
        # By what a name points at (course_key): `id:042` and `id:42` are one entry.
        self._courses: dict[CourseKey, tuple[_Course, float]] = {}
        self._courses_lock = threading.Lock()
        self._cache_ttl = cache_ttl

    def __repr__(self) -> str:  # never the token
        return f"MoodleLms({self.base_url!r}, login={self.login!r})"

    # -- the adapter interface ----------------------------------------------------------------

    def find(self, external_id: str) -> LmsAccount | None:
        users = self._call(
            "core_user_get_users_by_field", {"field": "idnumber", "values": [external_id]}
        )
        if not isinstance(users, list):
            raise self._unexpected("core_user_get_users_by_field", "a list")
        # The database may compare idnumbers case-insensitively (MySQL): only an exact match counts.
        matches = [u for u in users if isinstance(u, dict) and u.get("idnumber") == external_id]
        if not matches:
            return None
        if len(matches) > 1:
            # Moodle does not keep user idnumbers unique; the bridge cannot tell which is the person.
            ids = ", ".join(str(u.get("id")) for u in matches)
            raise LmsRejected(
                f"moodle: {len(matches)} accounts (ids {ids}) share the idnumber {external_id}",
                errorcode="duplicateidnumber",
            )
        user = matches[0]
        user_id = _int(user.get("id"), "core_user_get_users_by_field")
        return LmsAccount(
            account_id=str(user_id),
            external_id=external_id,
            suspended=bool(user.get("suspended", False)),
            groups=self._cohorts_of(user_id),
            courses=self._courses_of(user_id),
        )

    def create(self, profile: AccountProfile) -> LmsAccount:
        if not profile.email:
            raise LmsRejected(
                f"moodle: {profile.external_id} has no email address, which Moodle requires",
                errorcode="missingemail",
            )
        user: dict[str, Any] = {
            "username": profile.username.lower(),
            "auth": self.auth,
            "idnumber": profile.external_id,
            **self._profile_fields(profile),
        }
        result = self._call("core_user_create_users", {"users": [user]})
        if not isinstance(result, list) or len(result) != 1 or not isinstance(result[0], dict):
            raise self._unexpected("core_user_create_users", "one created user")
        user_id = _int(result[0].get("id"), "core_user_create_users")
        return LmsAccount(account_id=str(user_id), external_id=profile.external_id)

    def update(self, account: LmsAccount, profile: AccountProfile) -> None:
        fields: dict[str, Any] = {
            "id": int(account.account_id),
            "username": profile.username.lower(),
            **self._profile_fields(profile),
        }
        self._update_user("core_user_update_users", fields)

    def set_suspended(self, account: LmsAccount, suspended: bool) -> None:
        self._update_user(
            "core_user_update_users", {"id": int(account.account_id), "suspended": suspended}
        )

    def add_to_group(self, account: LmsAccount, group: str) -> None:
        warnings = self._add_member(account, group)
        missing = [w for w in warnings if _is_missing_cohort(w)]
        if missing and self.create_cohorts:
            self._create_cohort(group)
            warnings = self._add_member(account, group)
        if missing and not self.create_cohorts:
            raise LmsTargetMissing(
                f"moodle: no cohort with idnumber {group!r}",
                errorcode="nocohort",
                function="core_cohort_add_cohort_members",
            )
        problems = [w for w in warnings if str(w.get("warningcode")) != WARNING_ALREADY_MEMBER]
        if problems:
            codes = ", ".join(f"{w.get('warningcode')}: {w.get('message')}" for w in problems)
            raise LmsRejected(
                f"moodle core_cohort_add_cohort_members: {codes}",
                errorcode="cohortwarning",
                function="core_cohort_add_cohort_members",
            )

    def remove_from_group(self, account: LmsAccount, group: str) -> None:
        cohort_id = self._cohort_ids().get(group)
        if cohort_id is None:
            return  # no such cohort: nobody is in it
        self._call(
            "core_cohort_delete_cohort_members",
            {"members": [{"cohortid": cohort_id, "userid": int(account.account_id)}]},
        )

    def enrol(self, account: LmsAccount, course: str) -> None:
        found = self._course(course)
        if found is None:
            raise LmsTargetMissing(f"moodle: no course {course!r}", errorcode="nocourse")
        user_id = int(account.account_id)
        if self._rule_names(found) - {course} and self._is_active_in(found, user_id):
            # Named both ways by the rules: enrolled under the other name at this login.
            return
        if self._has_inactive_enrolment(found.id, user_id):
            # Suspended (or out of its dates) by a course admin: enrolling again would make
            # it active (enrol_user() writes the status it is given). Theirs to lift.
            raise LmsMembershipHeld(
                f"moodle: the enrolment in {course!r} is suspended or outside its dates",
                courseid=found.id,
            )
        self._call(
            "enrol_manual_enrol_users",
            {
                "enrolments": [
                    {
                        "roleid": self.student_role_id,
                        "userid": user_id,
                        "courseid": found.id,
                    }
                ]
            },
        )

    def unenrol(self, account: LmsAccount, course: str) -> None:
        found = self._course(course)
        if found is None:
            return  # no such course: nobody is enrolled in it
        if self._rule_names(found) - {course}:
            # The rules also name this course the other way, and that spelling may still be
            # granted to this person: provisioning cannot tell the two apart, so rather than
            # unenrol now and enrol again at the next login, the enrolment stays.
            return
        self._call(
            "enrol_manual_unenrol_users",
            {"enrolments": [{"userid": int(account.account_id), "courseid": found.id}]},
        )

    def login_url(self, account: LmsAccount, target: str) -> str | None:
        if self.login != "userkey":
            return None
        result = self._call(
            "auth_userkey_request_login_url", {"user": {"idnumber": account.external_id}}
        )
        loginurl = result.get("loginurl") if isinstance(result, dict) else None
        if not isinstance(loginurl, str) or not loginurl.startswith(("https://", "http://")):
            raise self._unexpected("auth_userkey_request_login_url", "a loginurl")
        separator = "&" if "?" in loginurl else "?"
        return f"{loginurl}{separator}wantsurl={quote(target, safe='')}"

    # -- account fields -----------------------------------------------------------------------

    def _profile_fields(self, profile: AccountProfile) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "firstname": (profile.given_name or "").strip() or MISSING_NAME,
            "lastname": (profile.family_name or "").strip() or MISSING_NAME,
            "department": profile.department or "",
            "city": profile.location or "",
        }
        if profile.email:
            fields["email"] = profile.email
        lang = self._lang(profile.language)
        if lang:
            fields["lang"] = lang
        return fields

    def _lang(self, language: str | None) -> str | None:
        code = moodle_lang(language)
        if code is None or self.languages is None:
            return code
        if code in self.languages:
            return code
        base = code.split("_", 1)[0]
        return base if base in self.languages else None

    def _update_user(self, function: str, fields: dict[str, Any]) -> None:
        result = self._call(function, {"users": [fields]})
        # Recent Moodle answers {"warnings": [...]}; older releases answer null.
        warnings = result.get("warnings") if isinstance(result, dict) else None
        if warnings:
            codes = ", ".join(str(w.get("warningcode")) for w in warnings if isinstance(w, dict))
            raise LmsRejected(
                f"moodle {function}: user {fields['id']} not updated ({codes})",
                errorcode=codes,
                function=function,
            )

    def missing_targets(self, groups: Set[str], courses: Set[str]) -> list[str]:
        missing = []
        if not self.create_cohorts:
            cohorts = self._cohort_ids(refresh=True)
            missing += [f"group {name}" for name in sorted(groups) if name not in cohorts]
        missing += [f"course {name}" for name in sorted(courses) if self._course(name) is None]
        return missing

    # -- cohorts ------------------------------------------------------------------------------

    def _add_member(self, account: LmsAccount, group: str) -> list[dict[str, Any]]:
        result = self._call(
            "core_cohort_add_cohort_members",
            {
                "members": [
                    {
                        "cohorttype": {"type": "idnumber", "value": group},
                        "usertype": {"type": "id", "value": account.account_id},
                    }
                ]
            },
        )
        if not isinstance(result, dict):
            raise self._unexpected("core_cohort_add_cohort_members", "an object")
        return [w for w in result.get("warnings") or [] if isinstance(w, dict)]

    def _create_cohort(self, group: str) -> None:
        try:
            self._call(
                "core_cohort_create_cohorts",
                {
                    "cohorts": [
                        {
                            "categorytype": {"type": "system", "value": ""},
                            "name": group,
                            "idnumber": group,
                        }
                    ]
                },
            )
        except LmsRejected as exc:
            # Another login made it first ("record already exists: idnumber=...", a plain
            # invalidparameter unless the site has debugging on): adding again tells.
            if exc.context.get("errorcode") != "invalidparameter":
                raise
        self._cohorts.clear()

    def _cohort_ids(self, *, refresh: bool = False) -> dict[str, int]:
        cohorts = None if refresh else self._cohorts.get_all()
        if cohorts is None:
            result = self._call("core_cohort_get_cohorts", {})
            if not isinstance(result, list):
                raise self._unexpected("core_cohort_get_cohorts", "a list")
            cohorts = {
                str(c["idnumber"]): _int(c.get("id"), "core_cohort_get_cohorts")
                for c in result
                if isinstance(c, dict) and c.get("idnumber")
            }
            self._cohorts.set_all(cohorts)
        return cohorts

    def _cohorts_of(self, user_id: int) -> frozenset[str]:
        for attempt in range(2):
            cohorts = self._cohort_ids(refresh=attempt > 0)
            if self.managed_cohorts is not None:
                cohorts = {k: v for k, v in cohorts.items() if k in self.managed_cohorts}
            if not cohorts:
                return frozenset()
            try:
                result = self._call(
                    "core_cohort_get_cohort_members", {"cohortids": sorted(cohorts.values())}
                )
            except LmsRejected as exc:
                # A cached cohort was deleted since: list the cohorts again, once.
                if exc.context.get("errorcode") == "invalidrecord" and attempt == 0:
                    continue
                raise
            if not isinstance(result, list):
                raise self._unexpected("core_cohort_get_cohort_members", "a list")
            names = {v: k for k, v in cohorts.items()}
            return frozenset(
                names[entry["cohortid"]]
                for entry in result
                if isinstance(entry, dict)
                and entry.get("cohortid") in names
                and user_id in (entry.get("userids") or [])
            )
        raise AssertionError("unreachable")

    # -- courses ------------------------------------------------------------------------------

    def _courses_of(self, user_id: int) -> frozenset[str]:
        names: set[str] = set()
        for course in self._enrolled_courses(user_id):
            names |= self._rule_names(course) or self._both_names(course)
        return frozenset(names)

    def _enrolled_courses(self, user_id: int) -> list[_Course]:
        """The courses the user is actively enrolled in (Moodle lists no other)."""
        result = self._call(
            "core_enrol_get_users_courses", {"userid": user_id, "returnusercount": False}
        )
        if not isinstance(result, list):
            raise self._unexpected("core_enrol_get_users_courses", "a list")
        return [
            _Course(
                _int(entry.get("id"), "core_enrol_get_users_courses"),
                str(entry.get("shortname") or ""),
            )
            for entry in result
            if isinstance(entry, dict)
        ]

    def _rule_names(self, course: _Course) -> frozenset[str]:
        """The names the rules give this course (none, one, or both spellings)."""
        by_id = self._spellings.get(("id", str(course.id)), frozenset())
        return by_id | self._spellings.get(("shortname", course.shortname), frozenset())

    @staticmethod
    def _both_names(course: _Course) -> frozenset[str]:
        names = {f"{COURSE_ID_PREFIX}{course.id}"}
        return frozenset(names | {course.shortname} if course.shortname else names)

    def _is_active_in(self, course: _Course, user_id: int) -> bool:
        return course.id in {c.id for c in self._enrolled_courses(user_id)}

    def _has_inactive_enrolment(self, course_id: int, user_id: int) -> bool:
        """Whether the user has an enrolment in the course that is not active.

        ``onlysuspended`` selects people enrolled in the course whose every enrolment is
        suspended, in a disabled method, or outside its dates (get_enrolled_join()).
        """
        result = self._call(
            "core_enrol_get_enrolled_users",
            {
                "courseid": course_id,
                "options": [
                    {"name": "onlysuspended", "value": 1},
                    {"name": "userfields", "value": "id"},
                ],
            },
        )
        if not isinstance(result, list):
            raise self._unexpected("core_enrol_get_enrolled_users", "a list")
        return any(isinstance(u, dict) and u.get("id") == user_id for u in result)

    def _course(self, course: str) -> _Course | None:
        """The course a rule names by shortname, or by ``id:<n>``; None if there is none."""
        key = course_key(course)
        field, value = key
        with self._courses_lock:
            cached = self._courses.get(key)
        if cached is not None and time.monotonic() - cached[1] <= self._cache_ttl:
            return cached[0]
        result = self._call("core_course_get_courses_by_field", {"field": field, "value": value})
        courses = result.get("courses") if isinstance(result, dict) else None
        if not isinstance(courses, list):
            raise self._unexpected("core_course_get_courses_by_field", "courses")
        # Shortnames are unique in Moodle; still, only an exact match counts.
        found = [c for c in courses if isinstance(c, dict) and str(c.get(field)) == value]
        if not found:
            return None
        resolved = _Course(
            _int(found[0].get("id"), "core_course_get_courses_by_field"),
            str(found[0].get("shortname") or ""),
        )
        with self._courses_lock:
            self._courses[key] = (resolved, time.monotonic())
        return resolved

    # -- the REST call ------------------------------------------------------------------------

    def _call(self, function: str, params: Mapping[str, Any]) -> Any:
        data = [
            ("wstoken", self._token),
            ("wsfunction", function),
            ("moodlewsrestformat", "json"),
            *encode_params(params),
        ]
        timeout = call_timeout(self.timeout)
        try:
            with self._session.post(
                self.base_url + REST_PATH,
                data=data,
                timeout=timeout,
                allow_redirects=False,
                stream=True,
            ) as response:
                status = response.status_code
                if status >= 500 or status == 429:
                    raise LmsUnavailable(f"moodle {function}: HTTP {status}", function=function)
                if status != 200:
                    # A redirect (to https, to a login page) or a 4xx: the base URL or a
                    # proxy is wrong.
                    raise LmsRejected(f"moodle {function}: HTTP {status}", function=function)
                what = f"moodle {function}"
                raw = read_bounded(response, MAX_ANSWER_BYTES, time.monotonic() + timeout, what)
        except (requests.Timeout, FetchTooSlow):
            raise LmsUnavailable(
                f"moodle {function}: no answer within {timeout:g} s", function=function
            ) from None
        except FetchTooLarge as exc:
            raise LmsRejected(str(exc), function=function) from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            if any(isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args):
                # A body that stopped coming: requests reports it as a connection error.
                raise LmsUnavailable(
                    f"moodle {function}: no answer within {timeout:g} s", function=function
                ) from None
            raise LmsUnavailable(
                f"moodle {function}: could not connect to {self.base_url}", function=function
            ) from None
        except requests.RequestException as exc:
            raise LmsRejected(
                f"moodle {function}: request failed ({type(exc).__name__})", function=function
            ) from None
        try:
            body = json.loads(raw)
        except ValueError:
            raise self._unexpected(function, "JSON") from None
        if isinstance(body, dict) and "exception" in body:
            errorcode = str(body.get("errorcode") or body.get("exception"))
            message = str(body.get("message") or "")
            if body.get("debuginfo"):  # only from a site with debugging on
                message += f" ({body['debuginfo']})"
            detail = f"moodle {function}: {errorcode}: {self._scrub(message)[:500]}"
            error = LmsUnavailable if errorcode in TRANSIENT_ERRORCODES else LmsRejected
            raise error(detail, errorcode=errorcode, function=function)
        return body

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***")

    @staticmethod
    def _unexpected(function: str, wanted: str) -> LmsRejected:
        return LmsRejected(
            f"moodle {function}: unexpected answer (wanted {wanted})",
            errorcode="unexpectedanswer",
            function=function,
        )


def _int(value: Any, function: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MoodleLms._unexpected(function, "a numeric id")
    try:
        return int(value)
    except ValueError:
        raise MoodleLms._unexpected(function, "a numeric id") from None


def _is_missing_cohort(warning: Mapping[str, Any]) -> bool:
    return str(warning.get("warningcode")) == WARNING_NOT_FOUND and str(
        warning.get("message", "")
    ).startswith("cohort ")
