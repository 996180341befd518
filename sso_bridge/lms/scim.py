"""The SCIM 2.0 adapter (RFC 7643 and RFC 7644), for LMSs that accept SCIM provisioning.

Requests and answers are built and read with scim2-client and scim2-models; the
transport is an httpx2 client with timeouts, no redirects and no proxy taken from the
environment (only the configured `outbound_proxy`).

- A person is a User with the enterprise extension: userName, externalId (the bridge's
  id, the lookup key), name.givenName/familyName, displayName, a primary work email,
  preferredLanguage, title and active, and employeeNumber, department and manager.value
  (the bridge's manager id as the portal sent it). `location` has no SCIM attribute of
  its own and is not sent.
- `find` asks for `externalId eq "<id>"` (the id quoted as a JSON string) and keeps
  only exact matches, so an id holding a quote can never match another user; two
  matches are an error, not a guess.
- `update` and `set_suspended` read the user, change only the attributes that differ
  (nothing is written when nothing differs) with a PATCH, or a PUT of the whole user
  when the server does not announce PATCH, and send `If-Match` when the server
  announces ETags; a user changed in between is read again and the change retried.
- Groups (cohorts) are found by exact displayName and created when missing; members
  are added and removed with PATCH. `LmsAccount.groups` comes from the user's `groups`
  attribute when the server fills it, otherwise from `members.value eq "<id>"`.
- SCIM has no courses: `enrol`/`unenrol` refuse, and `login_url` is None (people
  arrive through the bridge's OpenID Provider).

Failures: no answer (timeout, refused or dropped connection), 5xx and 429 raise
`LmsUnavailable`; any other refusal or an answer that is not SCIM raises
`LmsRejected`. Messages name the operation, the status and the server's detail, never
a credential. A create whose answer was lost is found by its externalId before a retry
creates anything again (the provisioning flow calls `find` first); should a create
still meet the user it made earlier (409 with the same externalId), that user is
brought up to date and returned.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Set
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import httpx2
from pydantic import ValidationError
from scim2_client import RequestNetworkException, SCIMClientException
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_models import (
    Context,
    Email,
    EnterpriseUser,
    Group,
    ListResponse,
    Manager,
    Name,
    PatchOp,
    Resource,
    ResourceType,
    SCIMException,
    ScimPolicy,
    ScimProvider,
    SearchRequest,
    ServiceProviderConfig,
    User,
)

from .base import (
    GROUPS,
    SUSPEND,
    AccountProfile,
    LmsAccount,
    LmsError,
    LmsRejected,
    LmsUnavailable,
    call_timeout,
)

ScimUser = User[EnterpriseUser]
ENTERPRISE = str(EnterpriseUser.__schema__)
WORK = "work"

PAGE_SIZE = 100
# More results than this for an `externalId eq` filter means the server ignored it.
MAX_USER_MATCHES = 10
MAX_GROUPS_PER_USER = 1000
# scim2-client accepts only the status codes RFC 7644 lists for each operation; LMSs
# answer 200 where 201 is due, and the like. Any 2xx is a success (a failure without a
# SCIM error is still one).
ANY_SUCCESS: dict[str, Any] = {"expected_status_codes": None}
# How often a write is retried when the resource changed between the read and the write.
VERSION_RETRIES = 3

_R = TypeVar("_R", bound=Resource[Any])
_T = TypeVar("_T")

# (attribute path, wanted value): None removes the attribute.
Change = tuple[str, Any]


class ScimLms:
    """An LMS reached over SCIM 2.0.

    :param base_url: the SCIM base URL (the one /Users and /Groups are under).
    :param token: a bearer token; or `username` and `password` for HTTP Basic.
    :param timeout: seconds for each of connecting, sending, waiting for and reading
        an answer.
    :param http: an httpx2.Client to send through (a custom transport or TLS setup);
        the adapter sets its base URL, credentials, timeout and SCIM headers. By
        default the adapter makes its own, which ignores proxy settings from the
        environment.
    :param proxy: the proxy URL its own client goes through (the bridge's
        `outbound_proxy`, as for its other outbound requests); None: direct.
    """

    name: ClassVar[str] = "scim"
    capabilities: ClassVar[frozenset[str]] = frozenset({GROUPS, SUSPEND})

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        http: httpx2.Client | None = None,
        proxy: str | None = None,
    ) -> None:
        if token and (username or password):
            raise ValueError("give a bearer token or a username and password, not both")
        if (username is None) != (password is None):
            raise ValueError("HTTP Basic needs both a username and a password")
        if timeout <= 0:
            raise ValueError("the timeout must be positive")
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/scim+json", "Content-Type": "application/scim+json"}
        auth: httpx2.BasicAuth | None = None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif username is not None and password is not None:
            auth = httpx2.BasicAuth(username, password)
        self._owns_http = http is None
        if http is None:
            http = httpx2.Client(
                base_url=self.base_url,
                headers=headers,
                auth=auth,
                timeout=httpx2.Timeout(timeout),
                follow_redirects=False,
                trust_env=False,
                proxy=proxy,
            )
        else:
            http.base_url = httpx2.URL(self.base_url)
            http.headers.update(headers)
            if auth is not None:
                http.auth = auth
            http.timeout = httpx2.Timeout(timeout)
        # Each request's timeouts end with the login's LMS budget (base.call_timeout).
        http.event_hooks["request"].append(_within_budget)
        self._http = http
        self._scim = SyncSCIMClient(http, provider=_provider(None))
        self._discovered = False
        self._patch = True

    def __repr__(self) -> str:
        return f"<ScimLms {self.base_url}>"

    def close(self) -> None:
        """Close the HTTP client, if the adapter made it."""
        if self._owns_http:
            self._http.close()

    # --- the adapter interface ---------------------------------------------------------

    def find(self, external_id: str) -> LmsAccount | None:
        users = self._search(
            ScimUser,
            f"externalId eq {filter_string(external_id)}",
            what="find user",
            limit=MAX_USER_MATCHES,
        )
        # Exact matches only, whatever the server's filter made of the value.
        matches = [user for user in users if user.external_id == external_id]
        if not matches:
            return None
        if len(matches) > 1:
            raise LmsRejected(
                f"SCIM find user: {len(matches)} users have the same externalId",
                external_id=external_id,
            )
        return self._account(matches[0])

    def create(self, profile: AccountProfile) -> LmsAccount:
        with _errors("create user"):
            user = _user_from(profile)
        try:
            with _errors("create user"):
                created = self._scim.create(user, **ANY_SUCCESS)
        except LmsRejected as exc:
            if exc.context.get("http_status") != 409:
                raise
            # The userName is taken: by this person, if an earlier create went through
            # though its answer was lost. Then the account is theirs.
            existing = self.find(profile.external_id)
            if existing is None:
                raise LmsRejected(
                    "SCIM create user: the userName is taken by another account",
                    http_status=409,
                    external_id=profile.external_id,
                ) from exc
            self.update(existing, profile)
            return self.find(profile.external_id) or existing
        return self._account(_expect(created, ScimUser, "create user"), groups=frozenset())

    def update(self, account: LmsAccount, profile: AccountProfile) -> None:
        with _errors("update user"):
            _user_from(profile)  # refuse values the models refuse before reading anything
        self._change_user(account.account_id, lambda current: _profile_changes(current, profile))

    def set_suspended(self, account: LmsAccount, suspended: bool) -> None:
        active = not suspended

        def changes(current: dict[str, Any]) -> list[Change]:
            return [] if current.get("active") is active else [("active", active)]

        self._change_user(account.account_id, changes)

    def add_to_group(self, account: LmsAccount, group: str) -> None:
        group_id = self._group_id(group, create=True)
        assert group_id is not None
        self._change_members(group_id, add=account.account_id)

    def remove_from_group(self, account: LmsAccount, group: str) -> None:
        group_id = self._group_id(group, create=False)
        if group_id is not None:
            self._change_members(group_id, remove=account.account_id)

    def enrol(self, account: LmsAccount, course: str) -> None:
        raise LmsRejected("SCIM has no courses: use groups")

    def unenrol(self, account: LmsAccount, course: str) -> None:
        raise LmsRejected("SCIM has no courses: use groups")

    def login_url(self, account: LmsAccount, target: str) -> str | None:
        return None

    def missing_targets(self, groups: Set[str], courses: Set[str]) -> list[str]:
        # Groups are created when first needed; courses are refused by the capability
        # check before this is asked.
        return []

    # --- users -------------------------------------------------------------------------

    def _account(self, user: Any, groups: frozenset[str] | None = None) -> LmsAccount:
        if not user.id:
            raise LmsRejected("SCIM: the server sent a user without an id")
        return LmsAccount(
            account_id=user.id,
            external_id=user.external_id or "",
            suspended=user.active is False,
            groups=self._groups_of(user) if groups is None else groups,
        )

    def _change_user(self, account_id: str, plan: Callable[[dict[str, Any]], list[Change]]) -> None:
        """Read the user and write what `plan` finds different, on the version read."""
        self._discover()

        def attempt() -> None:
            with _errors("read user"):
                current = _expect(
                    self._scim.query(ScimUser, account_id, **ANY_SUCCESS), ScimUser, "read user"
                )
            changes = plan(current.model_dump())
            if not changes:
                return
            with _errors("update user"):
                if self._patch:
                    operations = [_patch_operation(path, value) for path, value in changes]
                    self._scim.modify(current, _patch(ScimUser, operations), **ANY_SUCCESS)
                else:
                    self._scim.replace(_apply(current, changes, ScimUser), **ANY_SUCCESS)

        _until_unchanged("user", attempt)

    # --- groups ------------------------------------------------------------------------

    def _groups_of(self, user: Any) -> frozenset[str]:
        memberships = user.groups or []
        if len(memberships) > MAX_GROUPS_PER_USER:
            raise LmsRejected(
                f"SCIM find user: {len(memberships)} groups, more than {MAX_GROUPS_PER_USER}"
            )
        if memberships and all(membership.display for membership in memberships):
            return frozenset(membership.display for membership in memberships)
        groups = self._search(
            Group,
            f"members.value eq {filter_string(user.id)}",
            what="read groups",
            limit=MAX_GROUPS_PER_USER,
            attributes=["displayName"],
        )
        return frozenset(group.display_name for group in groups if group.display_name)

    def _group_id(self, name: str, *, create: bool) -> str | None:
        group_id = self._find_group(name)
        if group_id is not None or not create:
            return group_id
        try:
            with _errors("create group"):
                created = self._scim.create(Group(display_name=name), **ANY_SUCCESS)
        except LmsRejected as exc:
            # Made since we looked, by someone else or by our own create whose answer
            # was lost?
            if exc.context.get("http_status") == 409:
                group_id = self._find_group(name)
                if group_id is not None:
                    return group_id
            raise
        group = _expect(created, Group, "create group")
        if not group.id:
            raise LmsRejected("SCIM create group: the server sent a group without an id")
        return str(group.id)

    def _find_group(self, name: str) -> str | None:
        groups = self._search(
            Group,
            f"displayName eq {filter_string(name)}",
            what="find group",
            limit=MAX_USER_MATCHES,
            attributes=["displayName"],
        )
        # The bridge's names are exact: "Sales" is not "sales", though the server's
        # filter may compare them without case.
        ids = [group.id for group in groups if group.display_name == name and group.id]
        if len(ids) > 1:
            raise LmsRejected(f"SCIM find group: {len(ids)} groups are named {name!r}")
        return ids[0] if ids else None

    def _change_members(
        self, group_id: str, *, add: str | None = None, remove: str | None = None
    ) -> None:
        """Add or remove one member: a PATCH, or a PUT of the members on the version read."""
        self._discover()
        if self._patch:
            if add is not None:
                operation = {"op": "add", "path": "members", "value": [{"value": add}]}
            else:
                path = f"members[value eq {filter_string(str(remove))}]"
                operation = {"op": "remove", "path": path}
            try:
                with _errors("update group"):
                    self._scim.modify(Group, group_id, _patch(Group, [operation]), **ANY_SUCCESS)
            except LmsRejected as exc:
                # Removing a member already gone, from a server that says so.
                if add is not None or exc.context.get("scim_type") != "noTarget":
                    raise
            return

        def attempt() -> None:
            with _errors("read group"):
                group = _expect(
                    self._scim.query(Group, group_id, **ANY_SUCCESS), Group, "read group"
                )
            members = [member.model_dump() for member in group.members or []]
            values = [member.get("value") for member in members]
            if add is not None and add not in values:
                members.append({"value": add})
            elif remove is not None and remove in values:
                members = [member for member in members if member.get("value") != remove]
            else:
                return
            with _errors("update group"):
                self._scim.replace(
                    _apply(group, [("members", members or None)], Group), **ANY_SUCCESS
                )

        _until_unchanged("group", attempt)

    # --- requests ----------------------------------------------------------------------

    def _discover(self) -> None:
        """Read once what the server announces (PATCH, ETags). A server without
        /ServiceProviderConfig is taken to serve PATCH, without ETags."""
        if self._discovered:
            return
        try:
            with _errors("read service provider config"):
                answer = self._scim.query(ServiceProviderConfig, **ANY_SUCCESS)
        except LmsRejected as exc:
            if exc.context.get("http_status") not in (404, 501):
                raise
        else:
            config = _expect(answer, ServiceProviderConfig, "read service provider config")
            self._scim.provider = _provider(config)
            self._patch = config.patch is None or bool(config.patch.supported)
        self._discovered = True

    def _search(
        self,
        model: type[_R],
        scim_filter: str,
        *,
        what: str,
        limit: int,
        attributes: list[str] | None = None,
    ) -> list[_R]:
        """Every resource the filter selects, page by page (GET with a filter)."""
        self._discover()
        found: list[_R] = []
        start = 1
        while True:
            with _errors(what):
                query: dict[str, Any] = {
                    "filter": scim_filter,
                    "startIndex": start,
                    "count": PAGE_SIZE,
                }
                if attributes:
                    query["attributes"] = attributes
                request = SearchRequest[Any].model_validate(query)
                answer = self._scim.query(model, query_parameters=request, **ANY_SUCCESS)
            if not isinstance(answer, ListResponse):
                raise LmsRejected(f"SCIM {what}: the answer is not a list")
            total = answer.total_results or 0
            if total > limit:
                raise LmsRejected(
                    f"SCIM {what}: {total} results, more than {limit}: "
                    "the server does not seem to apply the filter"
                )
            resources = answer.resources or []
            if len(found) + len(resources) > limit:
                # A page larger than its totalResults said: bounded all the same.
                raise LmsRejected(f"SCIM {what}: more than {limit} results")
            found.extend(resource for resource in resources if isinstance(resource, model))
            if not resources or start - 1 + len(resources) >= total:
                return found
            start += len(resources)


def _until_unchanged(kind: str, attempt: Callable[[], None]) -> None:
    """Run ``attempt`` (read the resource, write on the version read) again while the
    server answers 412: someone changed it between the read and the write."""
    for _ in range(VERSION_RETRIES):
        try:
            attempt()
            return
        except LmsRejected as exc:
            if exc.context.get("http_status") != 412:
                raise
    raise LmsUnavailable(
        f"SCIM update {kind}: the {kind} kept changing between reading and writing it",
        http_status=412,
    )


def filter_string(value: str) -> str:
    """A value as a SCIM filter string: a JSON string (RFC 7644 §3.4.2.2), quotes escaped."""
    return json.dumps(value, ensure_ascii=False)


def _provider(config: ServiceProviderConfig | None) -> ScimProvider:
    return ScimProvider(
        models=[User, EnterpriseUser, Group],
        resource_types=[ResourceType.from_resource(ScimUser), ResourceType.from_resource(Group)],
        config=config,
        # LMSs add attributes and extensions of their own: read past them.
        policy=ScimPolicy(unknown=ScimPolicy.Unknown.ignore),
    )


# --- errors ---------------------------------------------------------------------------


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """Turn what httpx2, scim2-client and scim2-models raise into LmsError."""
    try:
        yield
    except LmsError:
        raise
    except RequestNetworkException as exc:
        cause = exc.__cause__
        if isinstance(cause, httpx2.UnsupportedProtocol):
            raise LmsRejected(f"SCIM {what}: the base URL is not http or https") from exc
        reason = type(cause).__name__ if cause is not None else "no answer"
        raise LmsUnavailable(f"SCIM {what}: no answer ({reason})") from exc
    except SCIMException as exc:
        # An Error object the server sent, or a request the models refused.
        raise _by_status(
            what,
            _int(exc.status),
            detail=exc.detail,
            scim_type=exc.scim_type or None,
            source=getattr(exc, "source", None),
        ) from exc
    except SCIMClientException as exc:
        source = exc.source
        raise _by_status(
            what, _int(getattr(source, "status_code", None)), detail=exc.message, source=source
        ) from exc
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise LmsRejected(f"SCIM {what}: invalid value: {problem.get('msg', '?')}") from exc
    except httpx2.HTTPError as exc:
        raise LmsUnavailable(f"SCIM {what}: no answer ({type(exc).__name__})") from exc


def _by_status(
    what: str,
    status: int | None,
    *,
    detail: str,
    scim_type: str | None = None,
    source: Any = None,
) -> LmsError:
    context: dict[str, Any] = {"http_status": status}
    label = f"HTTP {status}" if status is not None else "unexpected answer"
    if scim_type:
        context["scim_type"] = scim_type
        label = f"{label} ({scim_type})"
    headers = getattr(source, "headers", None)
    retry_after = headers.get("retry-after") if headers is not None else None
    if retry_after:
        context["retry_after"] = retry_after
    message = f"SCIM {what}: {label}: {detail}"
    if status is not None and (status >= 500 or status == 429):
        return LmsUnavailable(message, **context)
    return LmsRejected(message, **context)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _expect(answer: Any, model: type[_T], what: str) -> _T:
    if not isinstance(answer, model):
        raise LmsRejected(f"SCIM {what}: the answer is not a {model.__name__}")
    return answer


# --- the user as the profile wants it ------------------------------------------------


def _user_from(profile: AccountProfile) -> Any:
    user = ScimUser(
        user_name=profile.username,
        external_id=profile.external_id,
        display_name=profile.display_name,
        title=profile.job_title,
        preferred_language=profile.language,
        active=True,
    )
    if profile.given_name is not None or profile.family_name is not None:
        user.name = Name(given_name=profile.given_name, family_name=profile.family_name)
    if profile.email is not None:
        user.emails = [
            Email.model_validate({"value": profile.email, "type": WORK, "primary": True})
        ]
    if any(
        value is not None
        for value in (profile.employee_number, profile.department, profile.manager)
    ):
        user[EnterpriseUser] = EnterpriseUser(
            employee_number=profile.employee_number,
            department=profile.department,
            manager=Manager.model_validate({"value": profile.manager})
            if profile.manager is not None
            else None,
        )
    return user


def _profile_changes(current: dict[str, Any], profile: AccountProfile) -> list[Change]:
    """What differs between the user as the server has it (SCIM JSON) and the profile."""
    wanted: dict[str, Any] = {
        "userName": profile.username,
        "name.givenName": profile.given_name,
        "name.familyName": profile.family_name,
        "displayName": profile.display_name,
        "title": profile.job_title,
        "preferredLanguage": profile.language,
        f"{ENTERPRISE}:employeeNumber": profile.employee_number,
        f"{ENTERPRISE}:department": profile.department,
    }
    changes: list[Change] = [
        (path, value) for path, value in wanted.items() if _get(current, path) != value
    ]
    # userName is not case-exact (RFC 7643 §4.1.1): a server may keep it in its own case.
    if str(_get(current, "userName") or "").casefold() == profile.username.casefold():
        changes = [change for change in changes if change[0] != "userName"]
    if _get(current, f"{ENTERPRISE}:manager.value") != profile.manager:
        manager = {"value": profile.manager} if profile.manager is not None else None
        changes.append((f"{ENTERPRISE}:manager", manager))
    emails = current.get("emails") or []
    merged = _merged_emails(emails, profile.email)
    if _email_key(merged) != _email_key(emails):
        changes.append(("emails", merged or None))
    return changes


def _merged_emails(emails: list[dict[str, Any]], email: str | None) -> list[dict[str, Any]]:
    """The user's emails with `email` as the one primary work email (no work email if
    None); emails of other types are kept, and no longer primary."""
    others = [entry for entry in emails if entry.get("type") != WORK]
    if email is None:
        return others
    others = [{**entry, "primary": False} if entry.get("primary") else entry for entry in others]
    return [{"value": email, "type": WORK, "primary": True}, *others]


def _email_key(emails: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    return sorted(
        (
            str(entry.get("value") or "").casefold(),
            str(entry.get("type") or ""),
            bool(entry.get("primary")),
        )
        for entry in emails
    )


def _split(path: str) -> list[str]:
    if path.startswith(f"{ENTERPRISE}:"):
        return [ENTERPRISE, *path[len(ENTERPRISE) + 1 :].split(".")]
    return path.split(".")


def _get(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for part in _split(path):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = _split(path)
    node = document
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            if value is None:
                return
            child = node[part] = {}
        node = child
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value


def _patch_operation(path: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {"op": "remove", "path": path}
    return {"op": "replace", "path": path, "value": value}


def _patch(model: type[_R], operations: list[dict[str, Any]]) -> PatchOp[_R]:
    """A PatchOp the models check (paths, values) before it is sent."""
    return PatchOp[model].model_validate({"Operations": operations})  # type: ignore[valid-type]


def _apply(resource: Resource[Any], changes: list[Change], model: type[_R]) -> _R:
    """A copy of `resource` with the changes made, to PUT back on the version read."""
    document = resource.model_dump()
    for path, value in changes:
        _set(document, path, value)
    return model.model_validate(document, scim_ctx=Context.RESOURCE_QUERY_RESPONSE)


def _within_budget(request: httpx2.Request) -> None:
    timeouts = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {
        name: None if value is None else call_timeout(value) for name, value in timeouts.items()
    }
