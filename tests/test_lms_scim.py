"""The SCIM adapter against a real scim2-server (tests/scim_server.py)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from sso_bridge.db import Database
from sso_bridge.lms import build_adapter
from sso_bridge.lms.base import (
    GROUPS,
    SUSPEND,
    AccountProfile,
    LmsAccount,
    LmsRejected,
    LmsUnavailable,
    lms_deadline,
)
from sso_bridge.lms.scim import ScimLms, filter_string
from sso_bridge.settings import LmsSettings

from .forward_proxy import ForwardProxy
from .scim_server import ScimServer, start_scim_server

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_profile(**overrides: Any) -> AccountProfile:
    external_id = overrides.pop("external_id", None) or unique("ext")
    fields: dict[str, Any] = {
        "external_id": external_id,
        "username": f"{external_id}@example.com",
        "email": f"{external_id}@example.com",
        "given_name": "Ada",
        "family_name": "Lovelace",
        "display_name": "Ada Lovelace",
        "department": "Engineering",
        "language": "en-GB",
        "job_title": "Analyst",
        "employee_number": "E-1815",
        "manager": "E-0001",
    }
    fields.update(overrides)
    return AccountProfile(**fields)


@pytest.fixture
def scim(scim_server: ScimServer) -> Iterator[ScimLms]:
    adapter = ScimLms(scim_server.url, token=scim_server.token, timeout=2.0)
    try:
        yield adapter
    finally:
        adapter.close()
        scim_server.clear_faults()


def raw_client(server: ScimServer) -> httpx2.Client:
    """Plain HTTP to the server, to set things up behind the adapter's back."""
    return httpx2.Client(
        base_url=server.url,
        headers={
            "Authorization": f"Bearer {server.token}",
            "Content-Type": "application/scim+json",
            "X-Editor": "someone else",
        },
        trust_env=False,
        timeout=5,
    )


def only_user(server: ScimServer, external_id: str) -> dict[str, Any]:
    users = server.users(external_id)
    assert len(users) == 1, users
    return users[0]


# --- the life of an account ---------------------------------------------------------


def test_the_adapter_declares_groups_and_suspend_and_no_courses(scim: ScimLms) -> None:
    assert scim.name == "scim"
    assert scim.capabilities == frozenset({GROUPS, SUSPEND})
    account = LmsAccount(account_id="x", external_id="y")
    assert scim.login_url(account, "https://courses.example.com/") is None
    with pytest.raises(LmsRejected):
        scim.enrol(account, "course-1")
    with pytest.raises(LmsRejected):
        scim.unenrol(account, "course-1")


def test_create_maps_the_profile_to_a_user_with_the_enterprise_extension(
    scim: ScimLms, scim_server: ScimServer
) -> None:
    profile = make_profile()
    assert scim.find(profile.external_id) is None

    account = scim.create(profile)

    assert account.external_id == profile.external_id
    assert account.suspended is False
    assert account.groups == frozenset()
    user = only_user(scim_server, profile.external_id)
    assert user["id"] == account.account_id
    assert user["userName"] == profile.username
    assert user["name"] == {"givenName": "Ada", "familyName": "Lovelace"}
    assert user["displayName"] == "Ada Lovelace"
    assert user["emails"] == [{"value": profile.email, "type": "work", "primary": True}]
    assert user["preferredLanguage"] == "en-GB"
    assert user["title"] == "Analyst"
    assert user["active"] is True
    assert user[ENTERPRISE] == {
        "employeeNumber": "E-1815",
        "department": "Engineering",
        "manager": {"value": "E-0001"},
    }
    # Every request carried the bearer token and SCIM's media type.
    for request in scim_server.seen():
        if request.path.endswith("/ServiceProviderConfig"):
            continue
        assert request.header("Authorization") == f"Bearer {scim_server.token}"
    post = scim_server.seen("POST", "/Users")[-1]
    assert post.header("Content-Type") == "application/scim+json"

    found = scim.find(profile.external_id)
    assert found == account


def test_update_changes_only_what_differs_with_if_match(
    scim: ScimLms, scim_server: ScimServer
) -> None:
    profile = make_profile()
    account = scim.create(profile)
    version = only_user(scim_server, profile.external_id)["meta"]["version"]
    before = len(scim_server.seen("PATCH"))

    scim.update(account, make_profile(external_id=profile.external_id, department="Finance"))

    user = only_user(scim_server, profile.external_id)
    assert user[ENTERPRISE]["department"] == "Finance"
    assert user[ENTERPRISE]["employeeNumber"] == "E-1815"
    assert user["name"] == {"givenName": "Ada", "familyName": "Lovelace"}
    assert user["emails"] == [{"value": profile.email, "type": "work", "primary": True}]
    patches = scim_server.seen("PATCH")[before:]
    assert len(patches) == 1
    assert patches[0].path == f"/v2/Users/{account.account_id}"
    assert patches[0].header("If-Match") == version

    # Nothing differs: nothing is written.
    scim.update(account, make_profile(external_id=profile.external_id, department="Finance"))
    assert len(scim_server.seen("PATCH")) == before + 1
    assert len(scim_server.seen("PUT")) == 0


def test_update_clears_removed_fields_and_keeps_other_emails(
    scim: ScimLms, scim_server: ScimServer
) -> None:
    profile = make_profile()
    account = scim.create(profile)
    # The LMS holds a home email the bridge does not manage.
    with raw_client(scim_server) as http:
        answer = http.patch(
            f"/Users/{account.account_id}",
            json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {
                        "op": "add",
                        "path": "emails",
                        "value": [{"value": "ada@home.example.org", "type": "home"}],
                    }
                ],
            },
        )
        assert answer.status_code in (200, 204), answer.text

    changed = make_profile(
        external_id=profile.external_id,
        username=profile.username,
        email="ada.lovelace@example.com",
        job_title=None,
        manager=None,
        given_name="Augusta Ada",
    )
    scim.update(account, changed)

    user = only_user(scim_server, profile.external_id)
    assert "title" not in user
    assert "manager" not in user[ENTERPRISE]
    assert user["name"] == {"givenName": "Augusta Ada", "familyName": "Lovelace"}
    emails = sorted(user["emails"], key=lambda email: email["type"])
    assert emails == [
        {"value": "ada@home.example.org", "type": "home"},
        {"value": "ada.lovelace@example.com", "type": "work", "primary": True},
    ]


def test_groups_are_created_once_and_members_added_and_removed(
    scim: ScimLms, scim_server: ScimServer
) -> None:
    account = scim.create(make_profile())
    cohort_a, cohort_b = unique("cohort-a"), unique("cohort-b")

    scim.add_to_group(account, cohort_a)
    scim.add_to_group(account, cohort_b)
    scim.add_to_group(account, cohort_a)  # already in: a no-op

    found = scim.find(account.external_id)
    assert found is not None
    assert found.groups == frozenset({cohort_a, cohort_b})
    (group_a,) = scim_server.groups(cohort_a)
    assert [member["value"] for member in group_a["members"]] == [account.account_id]
    assert len(scim_server.groups(cohort_b)) == 1

    scim.remove_from_group(account, cohort_a)
    scim.remove_from_group(account, cohort_a)  # already out: a no-op
    scim.remove_from_group(account, unique("never-made"))  # no such group: a no-op

    found = scim.find(account.external_id)
    assert found is not None
    assert found.groups == frozenset({cohort_b})
    assert not scim_server.groups(cohort_a)[0].get("members")
    assert all("never-made" not in (g.get("displayName") or "") for g in scim_server.groups())


def test_group_names_are_exact(scim: ScimLms, scim_server: ScimServer) -> None:
    account = scim.create(make_profile())
    name = unique("Sales")

    scim.add_to_group(account, name)
    scim.add_to_group(account, name.lower())

    # The server's filter ignores case; the bridge's names do not.
    assert len(scim_server.groups(name)) == 1
    assert len(scim_server.groups(name.lower())) == 1
    found = scim.find(account.external_id)
    assert found is not None
    assert found.groups == frozenset({name, name.lower()})


def test_suspend_and_reinstate_set_active(scim: ScimLms, scim_server: ScimServer) -> None:
    profile = make_profile()
    account = scim.create(profile)

    scim.set_suspended(account, True)
    assert only_user(scim_server, profile.external_id)["active"] is False
    suspended = scim.find(profile.external_id)
    assert suspended is not None and suspended.suspended is True

    patches = len(scim_server.seen("PATCH"))
    scim.set_suspended(account, True)  # already suspended: nothing written
    assert len(scim_server.seen("PATCH")) == patches

    scim.set_suspended(account, False)
    assert only_user(scim_server, profile.external_id)["active"] is True
    reinstated = scim.find(profile.external_id)
    assert reinstated is not None and reinstated.suspended is False
    # The profile survived both.
    assert only_user(scim_server, profile.external_id)[ENTERPRISE]["department"] == "Engineering"


# --- lost answers, outages, refusals ----------------------------------------------------


def test_a_create_that_timed_out_is_found_and_not_made_twice(
    scim_server: ScimServer,
) -> None:
    profile = make_profile()
    adapter = ScimLms(scim_server.url, token=scim_server.token, timeout=0.5)
    try:
        adapter.find(unique("warm-up"))  # discovery done before the slow request
        scim_server.delay_next(3.0, method="POST", path="/Users")

        began = time.monotonic()
        with pytest.raises(LmsUnavailable) as caught:
            adapter.create(profile)
        assert time.monotonic() - began < 2.5
        assert "Timeout" in str(caught.value)

        # The server created the user all the same; the retry finds it first.
        account = adapter.find(profile.external_id)
        assert account is not None
        assert len(scim_server.users(profile.external_id)) == 1

        # A caller that creates again anyway gets the same account back.
        again = adapter.create(profile)
        assert again.account_id == account.account_id
        assert len(scim_server.users(profile.external_id)) == 1
    finally:
        adapter.close()
        scim_server.clear_faults()


def test_a_dropped_answer_is_unavailable_and_the_account_is_found(
    scim: ScimLms, scim_server: ScimServer
) -> None:
    profile = make_profile()
    scim.find(unique("warm-up"))
    scim_server.drop_next(method="POST", path="/Users", served=True)

    with pytest.raises(LmsUnavailable):
        scim.create(profile)

    account = scim.find(profile.external_id)
    assert account is not None
    assert len(scim_server.users(profile.external_id)) == 1


@pytest.mark.parametrize(
    ("status", "scim_error"),
    [(503, False), (503, True), (502, False), (500, True), (429, False)],
)
def test_5xx_and_429_are_unavailable(
    scim: ScimLms, scim_server: ScimServer, status: int, scim_error: bool
) -> None:
    scim.find(unique("warm-up"))
    scim_server.fail_next(status=status, scim_error=scim_error, retry_after=7)

    with pytest.raises(LmsUnavailable) as caught:
        scim.find(unique("ext"))

    assert caught.value.context["http_status"] == status
    assert caught.value.context["retry_after"] == "7"
    assert scim.find(unique("ext")) is None  # the next call goes through


def test_the_first_call_fails_cleanly_and_discovery_is_retried(
    scim_server: ScimServer,
) -> None:
    adapter = ScimLms(scim_server.url, token=scim_server.token, timeout=2.0)
    try:
        scim_server.fail_next(status=503, path="/ServiceProviderConfig")
        with pytest.raises(LmsUnavailable):
            adapter.find(unique("ext"))
        assert adapter.find(unique("ext")) is None
    finally:
        adapter.close()
        scim_server.clear_faults()


def test_no_server_is_unavailable(scim_server: ScimServer) -> None:
    with ScimServer() as gone:
        url = gone.url
    adapter = ScimLms(url, token="t", timeout=1.0)
    try:
        with pytest.raises(LmsUnavailable) as caught:
            adapter.find("anyone")
        assert "ConnectError" in str(caught.value)
    finally:
        adapter.close()


@pytest.mark.parametrize(
    ("status", "scim_error"), [(400, True), (400, False), (403, False), (404, True)]
)
def test_other_4xx_are_rejected(
    scim: ScimLms, scim_server: ScimServer, status: int, scim_error: bool
) -> None:
    scim.find(unique("warm-up"))
    scim_server.fail_next(status=status, scim_error=scim_error, method="POST")

    with pytest.raises(LmsRejected) as caught:
        scim.create(make_profile())

    assert caught.value.context["http_status"] == status


def test_a_value_the_server_refuses_is_rejected(scim: ScimLms, scim_server: ScimServer) -> None:
    taken = make_profile()
    scim.create(taken)

    # Another person with the same userName: a real 409 from the server.
    with pytest.raises(LmsRejected) as caught:
        scim.create(make_profile(username=taken.username))
    assert caught.value.context["http_status"] == 409
    assert "taken by another account" in str(caught.value)


def test_an_invalid_email_is_rejected_before_sending(
    scim: ScimLms, scim_server: ScimServer
) -> None:
    posts = len(scim_server.seen("POST"))
    with pytest.raises(LmsRejected) as caught:
        scim.create(make_profile(email="not an email"))
    assert "email" in str(caught.value)
    assert len(scim_server.seen("POST")) == posts


def test_a_wrong_token_is_rejected_without_showing_it(scim_server: ScimServer) -> None:
    secret = "wrong-" + uuid.uuid4().hex
    adapter = ScimLms(scim_server.url, token=secret, timeout=2.0)
    try:
        with pytest.raises(LmsRejected) as caught:
            adapter.find(unique("ext"))
        assert caught.value.context["http_status"] == 401
        assert secret not in str(caught.value)
        assert secret not in repr(caught.value.context)
        assert scim_server.token is not None
        assert scim_server.token not in str(caught.value)
    finally:
        adapter.close()


def test_two_users_with_one_external_id_are_an_error(
    scim: ScimLms, scim_server: ScimServer
) -> None:
    external_id = unique("dup")
    with raw_client(scim_server) as http:
        for n in range(2):
            answer = http.post(
                "/Users",
                json={
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": f"{external_id}-{n}",
                    "externalId": external_id,
                },
            )
            assert answer.status_code == 201, answer.text

    with pytest.raises(LmsRejected, match="2 users"):
        scim.find(external_id)


# --- the externalId filter --------------------------------------------------------------


def test_quotes_in_an_external_id_cannot_match_another_user(
    scim: ScimLms, scim_server: ScimServer
) -> None:
    victim = scim.create(make_profile())
    tricky_ids = [
        # Closes the string and widens the filter, if it were pasted in unescaped.
        f'{victim.external_id}" or externalId eq "{victim.external_id}',
        'nobody" or userName pr or externalId eq "x',
        f"{victim.external_id}\\",
        f'{victim.external_id}"',
    ]
    for tricky in tricky_ids:
        assert scim.find(tricky) is None, tricky

    # Not only the adapter's exact check: the server itself matches nobody, where the
    # same id pasted in between quotes would have matched the victim.
    with raw_client(scim_server) as http:
        for tricky in tricky_ids[:2]:
            naive = http.get("/Users", params={"filter": f'externalId eq "{tricky}"'})
            assert naive.json()["totalResults"] >= 1
            escaped = http.get(
                "/Users", params={"filter": f"externalId eq {filter_string(tricky)}"}
            )
            assert escaped.json()["totalResults"] == 0

    # Such ids are an account's own, found exactly.
    quoted = make_profile(
        external_id=f'{unique("q")}"quoted" \\ back\\slash',
        username=unique("u"),
        email=f"{unique('q')}@example.com",
    )
    account = scim.create(quoted)
    found = scim.find(quoted.external_id)
    assert found is not None and found.account_id == account.account_id
    # The filter that went out was a JSON string.
    gets = [r for r in scim_server.seen("GET", "/Users") if "filter=" in r.query]
    assert any("%5C%22quoted%5C%22" in r.query for r in gets)


# --- ETags, PUT-only servers, auth, transport --------------------------------------------


def test_a_user_changed_between_read_and_write_is_read_again(
    scim: ScimLms, scim_server: ScimServer
) -> None:
    profile = make_profile()
    account = scim.create(profile)

    def someone_else_edits() -> None:
        with raw_client(scim_server) as http:
            http.patch(
                f"/Users/{account.account_id}",
                json={
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": "nickName", "value": "Ada"}],
                },
            ).raise_for_status()

    before = len(scim_server.seen("PATCH"))
    scim_server.before_next(someone_else_edits, method="PATCH", path=account.account_id)

    scim.update(account, make_profile(external_id=profile.external_id, department="Research"))

    user = only_user(scim_server, profile.external_id)
    assert user["nickName"] == "Ada"
    assert user[ENTERPRISE]["department"] == "Research"
    patches = scim_server.seen("PATCH")[before:]
    assert [r.header("X-Editor") for r in patches] == [None, "someone else", None]
    # Ours was refused (a stale version), read again, and sent on the new version.
    assert patches[0].header("If-Match") != patches[2].header("If-Match")


def test_a_server_without_etags_gets_no_if_match() -> None:
    with start_scim_server(etag=False) as server:
        adapter = ScimLms(server.url, token=server.token, timeout=2.0)
        profile = make_profile()
        account = adapter.create(profile)
        adapter.update(account, make_profile(external_id=profile.external_id, department="Ops"))
        adapter.set_suspended(account, True)
        (patch, suspend) = server.seen("PATCH")
        assert patch.header("If-Match") is None and suspend.header("If-Match") is None
        assert only_user(server, profile.external_id)[ENTERPRISE]["department"] == "Ops"
        adapter.close()


def test_a_server_without_patch_gets_put_with_if_match() -> None:
    with start_scim_server(patch=False) as server:
        adapter = ScimLms(server.url, token=server.token, timeout=2.0)
        profile = make_profile()
        account = adapter.create(profile)
        adapter.update(account, make_profile(external_id=profile.external_id, department="Ops"))
        adapter.set_suspended(account, True)
        adapter.add_to_group(account, "alpha")
        adapter.add_to_group(account, "beta")
        adapter.remove_from_group(account, "alpha")

        user = only_user(server, profile.external_id)
        assert user[ENTERPRISE]["department"] == "Ops"
        assert user["active"] is False
        assert user["emails"] == [{"value": profile.email, "type": "work", "primary": True}]
        found = adapter.find(profile.external_id)
        assert found is not None and found.groups == frozenset({"beta"})
        assert not server.seen("PATCH")
        puts = server.seen("PUT")
        assert len(puts) == 5
        assert all(put.header("If-Match") for put in puts)
        adapter.close()


def test_basic_auth() -> None:
    with start_scim_server(token=None, basic=("bridge", "pa:ss word")) as server:
        adapter = ScimLms(server.url, username="bridge", password="pa:ss word", timeout=2.0)
        account = adapter.create(make_profile())
        assert adapter.find(account.external_id) == account
        adapter.close()

        wrong = ScimLms(server.url, username="bridge", password="nope", timeout=2.0)
        with pytest.raises(LmsRejected) as caught:
            wrong.find("anyone")
        assert caught.value.context["http_status"] == 401
        wrong.close()


def test_credentials_are_one_kind() -> None:
    with pytest.raises(ValueError):
        ScimLms("http://127.0.0.1:1/v2", token="t", username="u", password="p")
    with pytest.raises(ValueError):
        ScimLms("http://127.0.0.1:1/v2", username="u")


def test_proxy_settings_from_the_environment_are_ignored(
    scim_server: ScimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    adapter = ScimLms(scim_server.url, token=scim_server.token, timeout=2.0)
    try:
        assert adapter.find(unique("ext")) is None
    finally:
        adapter.close()


def test_requests_go_through_the_configured_outbound_proxy(
    scim_server: ScimServer, tmp_path: Any
) -> None:
    settings = LmsSettings(type="scim", api_url=scim_server.url, api_token=scim_server.token)
    db = Database(f"sqlite:///{tmp_path}/bridge.db")
    external_id = unique("ext")
    with ForwardProxy() as proxy:
        through = build_adapter(settings, db, (), proxy.url)
        direct = build_adapter(settings, db, (), None)
        assert isinstance(through, ScimLms) and isinstance(direct, ScimLms)
        try:
            assert through.find(external_id) is None
            relayed = proxy.seen
            assert direct.find(external_id) is None
        finally:
            through.close()
            direct.close()
    db.dispose()
    # A proxy is sent the absolute URL; the adapter without one went direct.
    assert relayed and all(line.startswith(f"GET {scim_server.url}/") for line in relayed)
    assert proxy.seen == relayed


def test_vendor_attributes_in_answers_are_read_past() -> None:
    """An LMS adds attributes and extensions of its own; the adapter reads past them."""
    user = {
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:example:lms:2.0:User",
        ],
        "id": "u-1",
        "externalId": "ext-1",
        "userName": "ada",
        "active": True,
        "lmsRole": "learner",
        "urn:example:lms:2.0:User": {"campus": "North"},
        "groups": [{"value": "g-1", "display": "cohort-1"}],
    }

    def answer(request: httpx2.Request) -> httpx2.Response:
        headers = {"Content-Type": "application/scim+json"}
        if request.url.path.endswith("/ServiceProviderConfig"):
            return httpx2.Response(404, headers=headers, json=error(404))
        assert request.url.path.endswith("/Users")
        assert request.url.params["filter"] == 'externalId eq "ext-1"'
        body = {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 1,
            "startIndex": 1,
            "itemsPerPage": 1,
            "Resources": [user],
        }
        return httpx2.Response(200, headers=headers, content=json.dumps(body).encode())

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    adapter = ScimLms("https://lms.example.com/scim/v2", token="t", http=http)
    account = adapter.find("ext-1")
    # The groups came from the user's own `groups` attribute: no Groups query.
    assert account == LmsAccount(
        account_id="u-1", external_id="ext-1", groups=frozenset({"cohort-1"})
    )
    http.close()


def error(status: int) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": str(status),
        "detail": "nope",
    }


def test_a_request_ends_with_the_logins_lms_budget(scim_server: ScimServer) -> None:
    adapter = ScimLms(scim_server.url, token=scim_server.token, timeout=10.0)
    try:
        adapter.find(unique("warm-up"))  # discovery done before the slow request
        scim_server.delay_next(3.0, method="GET", path="/Users")
        began = time.monotonic()
        with lms_deadline(began + 0.5), pytest.raises(LmsUnavailable):
            adapter.find(unique("slow"))
        assert time.monotonic() - began < 2.5  # the budget ended it, not the 10 s timeout
        with lms_deadline(time.monotonic() - 1), pytest.raises(LmsUnavailable, match="budget"):
            adapter.find(unique("late"))
    finally:
        adapter.close()
        scim_server.clear_faults()


def test_a_user_with_more_groups_than_the_bound_is_refused(
    scim: ScimLms, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the server sends is bounded whatever it claims: memory is the bridge's to guard.
    profile = make_profile()
    account = scim.create(profile)
    scim.add_to_group(account, unique("one"))
    scim.add_to_group(account, unique("two"))
    monkeypatch.setattr("sso_bridge.lms.scim.MAX_GROUPS_PER_USER", 1)
    with pytest.raises(LmsRejected, match="more than 1"):
        scim.find(profile.external_id)


def test_a_user_that_keeps_changing_is_given_up_on_as_unavailable(
    scim: ScimLms, scim_server: ScimServer
) -> None:
    profile = make_profile()
    account = scim.create(profile)
    try:
        scim_server.fail_next(3, status=412, method="PATCH", scim_error=True)
        with pytest.raises(LmsUnavailable, match="the user kept changing") as exc:
            scim.update(account, make_profile(external_id=profile.external_id, department="X"))
        assert exc.value.context["http_status"] == 412
    finally:
        scim_server.clear_faults()
    assert only_user(scim_server, profile.external_id)[ENTERPRISE]["department"] != "X"
