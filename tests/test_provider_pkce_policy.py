"""The per-client PKCE policy: a confidential client with `require_pkce = false`.

Moodle's OIDC plugins send no PKCE. Such a client may leave it out, and then its
secret at the token endpoint and the exact redirect URI are what bind the code to
it (RFC 9700, 2.1.1); everything else stays as strict as for any client: `plain`
is refused, a challenge it does send is verified, a code works once, for its own
client, at its own redirect URI.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from joserfc import jwt
from sqlalchemy import text

from sso_bridge.db import Database, alembic_config
from sso_bridge.models import OidcClient
from sso_bridge.provider import ProviderClient, sync_clients
from sso_bridge.settings import Settings
from tests.html_forms import form_fields
from tests.test_provider import (
    BASE,
    LMS_REDIRECT,
    LMS_SECRET,
    NOPKCE_REDIRECT,
    NOPKCE_SECRET,
    OTHER_SECRET,
    SPA_REDIRECT,
    Authorized,
    Bridge,
    authorize,
    basic,
    build_bridge,
    make_settings,
    query,
    redeem,
    redirect_base,
    s256,
    verify_id_token,
    write_key,
)

NO_PKCE: dict[str, Any] = {"code_challenge": None, "code_challenge_method": None}


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Bridge]:
    """The provider of tests/test_provider.py, whose client `nopkce` has require_pkce = false."""
    built = build_bridge(make_settings(tmp_path, [write_key(tmp_path / "rsa.pem", "rsa")]))
    yield built
    built.services.close()


def start(bridge: Bridge, **params: Any) -> Authorized:
    """An authorization request of the `nopkce` client, by a new signed-in person; no PKCE."""
    subject = f"E{uuid.uuid4().hex[:8]}"
    user_id, public_id = bridge.add_user(subject)
    args: dict[str, Any] = {**NO_PKCE, **params}
    return authorize(
        bridge.signed_in(user_id, public_id, subject),
        client_id="nopkce",
        redirect_uri=NOPKCE_REDIRECT,
        **args,
    )


def exchange(bridge: Bridge, code: str, verifier: str | None = None, **options: Any) -> Any:
    """The token request of the `nopkce` client (client_secret_basic unless told otherwise)."""
    args: dict[str, Any] = {
        "client_id": "nopkce",
        "secret": NOPKCE_SECRET,
        "redirect_uri": NOPKCE_REDIRECT,
        **options,
    }
    return redeem(bridge.client(), code, verifier, **args)


def refused(response: Any, error: str, description: str) -> None:
    body = response.get_json()
    assert response.status_code in (400, 401), body
    assert (body["error"], body.get("error_description")) == (error, description)
    assert "access_token" not in body and "id_token" not in body


# -- what works -------------------------------------------------------------------------------


@pytest.mark.parametrize("post_secret", [False, True], ids=["basic", "post"])
def test_the_code_flow_completes_without_pkce(bridge: Bridge, post_secret: bool) -> None:
    # As auth_oidc sends it: response_mode=form_post (the code comes back in a POST body)
    # and an Azure `resource`, which the bridge ignores.
    flow = start(bridge, response_mode="form_post", resource="https://graph.microsoft.com")
    action, params = form_fields(flow.response)
    assert action == NOPKCE_REDIRECT
    assert params["state"] == flow.state  # state is echoed as for every client
    assert params["iss"] == BASE
    response = exchange(bridge, params["code"], post_secret=post_secret)
    assert response.status_code == 200, response.get_json()
    claims = verify_id_token(bridge.client(), response.get_json()["id_token"]).claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": BASE},
        aud={"essential": True, "value": "nopkce"},
        nonce={"essential": True, "value": flow.nonce},
    ).validate(claims)
    assert claims["email"] == "ada@example.com"


def test_a_challenge_it_does_send_is_verified(bridge: Bridge) -> None:
    flow = start(bridge, code_challenge=s256(v := secrets.token_urlsafe(48)))
    # The method is required even so: without it RFC 7636 means `plain`.
    assert query(flow.response)["error_description"] == "code_challenge_method must be S256."
    flow = start(bridge, code_challenge=s256(v), code_challenge_method="S256")
    assert exchange(bridge, flow.code, v).status_code == 200


def test_without_pkce_a_nonce_and_openid_are_required(bridge: Bridge) -> None:
    # The nonce is what stands in for PKCE against an injected code (RFC 9700 2.1.1).
    for params, description in (
        ({"nonce": None}, "Without PKCE a nonce is required."),
        ({"nonce": ""}, "Without PKCE a nonce is required."),
        ({"scope": "profile email"}, "Without PKCE the scope must include openid."),
    ):
        flow = start(bridge, **params)
        assert redirect_base(flow.response) == NOPKCE_REDIRECT
        assert (query(flow.response)["error"], query(flow.response)["error_description"]) == (
            "invalid_request",
            description,
        ), params
        assert "code" not in query(flow.response)
    long = start(bridge, nonce="n" * 256)
    assert query(long.response)["error_description"] == "The nonce is too long."


def test_with_pkce_the_nonce_stays_optional(bridge: Bridge) -> None:
    verifier = secrets.token_urlsafe(48)
    flow = start(bridge, nonce=None, code_challenge=s256(verifier), code_challenge_method="S256")
    body = exchange(bridge, flow.code, verifier).get_json()
    assert "nonce" not in verify_id_token(bridge.client(), body["id_token"]).claims


# -- what is still refused ----------------------------------------------------------------------


def test_plain_is_refused(bridge: Bridge) -> None:
    verifier = secrets.token_urlsafe(48)
    flow = start(bridge, code_challenge=verifier, code_challenge_method="plain")
    assert redirect_base(flow.response) == NOPKCE_REDIRECT
    params = query(flow.response)
    assert (params["error"], params["error_description"]) == (
        "invalid_request",
        "code_challenge_method must be S256.",
    )
    assert params["state"] == flow.state
    assert "code" not in params


def test_a_method_without_a_challenge_is_refused(bridge: Bridge) -> None:
    params = query(start(bridge, code_challenge_method="S256").response)
    assert params["error_description"] == "code_challenge_method was sent without code_challenge."
    assert "code" not in params


def test_a_code_with_a_challenge_needs_its_verifier(bridge: Bridge) -> None:
    verifier = secrets.token_urlsafe(48)
    pkce = {"code_challenge": s256(verifier), "code_challenge_method": "S256"}
    missing = start(bridge, **pkce)
    refused(exchange(bridge, missing.code), "invalid_request", "Missing 'code_verifier'")
    wrong = start(bridge, **pkce)
    refused(
        exchange(bridge, wrong.code, secrets.token_urlsafe(48)),
        "invalid_grant",
        "Code challenge failed.",
    )
    # Either failure burns the code: the right verifier comes too late.
    for flow in (missing, wrong):
        refused(
            exchange(bridge, flow.code, verifier), "invalid_grant", "Invalid 'code' in request."
        )


def test_a_code_without_a_challenge_refuses_a_verifier(bridge: Bridge) -> None:
    # RFC 9700 4.8.2: otherwise an attacker could inject a code of their own session (no
    # challenge) into a flow whose client would then present its verifier.
    flow = start(bridge)
    refused(
        exchange(bridge, flow.code, secrets.token_urlsafe(48)),
        "invalid_request",
        "The authorization request had no 'code_challenge', but a 'code_verifier' was provided.",
    )


@pytest.mark.parametrize(
    "auth",
    [
        {"secret": None},  # client_id only: the public-client method
        {"secret": "W" * 40},
        {"secret": "W" * 40, "post_secret": True},
    ],
    ids=["no-secret", "wrong-basic", "wrong-post"],
)
def test_without_its_secret_the_code_is_worthless(bridge: Bridge, auth: dict[str, Any]) -> None:
    # The secret replaces PKCE here: a code stolen from the browser or the logs buys nothing.
    flow = start(bridge)
    refused(
        exchange(bridge, flow.code, **auth),
        "invalid_client",
        "The client cannot authenticate with methods: "
        "['client_secret_basic', 'client_secret_post', 'none']",
    )
    # The code was never looked at, so the LMS still redeems it.
    assert exchange(bridge, flow.code).status_code == 200


@pytest.mark.parametrize(
    "thief",
    [
        {"client_id": "other", "secret": OTHER_SECRET},
        {"client_id": "lms", "secret": "L" * 40, "redirect_uri": LMS_REDIRECT},
        {"client_id": "spa", "secret": None, "redirect_uri": SPA_REDIRECT},
    ],
    ids=["other-confidential", "other-at-its-own-uri", "public"],
)
def test_a_code_of_this_client_is_refused_to_another(bridge: Bridge, thief: dict[str, Any]) -> None:
    flow = start(bridge)
    refused(exchange(bridge, flow.code, **thief), "invalid_grant", "Invalid 'code' in request.")
    # Shown by the wrong client, the code has leaked: burnt for its owner too.
    refused(exchange(bridge, flow.code), "invalid_grant", "Invalid 'code' in request.")


def test_the_redirect_uri_must_match_at_the_token_endpoint(bridge: Bridge) -> None:
    flow = start(bridge)
    refused(
        exchange(bridge, flow.code, redirect_uri=NOPKCE_REDIRECT + "x"),
        "invalid_grant",
        "Invalid 'redirect_uri' in request.",
    )


def test_an_unregistered_redirect_uri_gets_the_error_page(bridge: Bridge) -> None:
    user_id, public_id = bridge.add_user()
    flow = authorize(
        bridge.signed_in(user_id, public_id),
        client_id="nopkce",
        redirect_uri=f"{BASE}/auth/oidc/evil",
        **NO_PKCE,
    )
    assert flow.response.status_code == 400
    assert "Location" not in flow.response.headers
    assert flow.response.get_data(as_text=True) == "error page: oidc_redirect_uri_invalid"


def test_a_code_issued_without_pkce_dies_when_the_client_starts_requiring_it(
    bridge: Bridge,
) -> None:
    flow = start(bridge)
    with bridge.services.db.session() as session:
        row = session.get(OidcClient, "nopkce")
        assert row is not None
        row.require_pkce = True
    refused(
        exchange(bridge, flow.code),
        "invalid_grant",
        "The code was issued without PKCE, which this client needs.",
    )


def test_a_public_client_requires_pkce_even_if_its_row_says_otherwise(bridge: Bridge) -> None:
    # Settings refuse require_pkce = false without a secret; a row edited by hand cannot
    # get round that.
    with bridge.services.db.session() as session:
        row = session.get(OidcClient, "spa")
        assert row is not None
        row.require_pkce = False
    user_id, public_id = bridge.add_user()
    flow = authorize(
        bridge.signed_in(user_id, public_id),
        client_id="spa",
        redirect_uri=SPA_REDIRECT,
        **NO_PKCE,
    )
    params = query(flow.response)
    assert params["error_description"] == "PKCE is required: send code_challenge with method S256."
    assert "code" not in params


def test_discovery_still_says_s256_only(bridge: Bridge) -> None:
    doc = bridge.client().get("/.well-known/openid-configuration").get_json()
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_modes_supported"] == ["query", "form_post"]


# -- a client changed while its code is outstanding ------------------------------------------------


def reconfigure(bridge: Bridge, client_id: str, **changes: Any) -> None:
    """Sync the client table from the bridge's settings with one client changed, as at a restart."""
    data = bridge.settings.model_dump()
    for client in data["provider"]["clients"]:
        if client["client_id"] == client_id:
            client.update(changes)
    sync_clients(bridge.services.db, Settings.model_validate(data))


def edit_row(bridge: Bridge, client_id: str, **changes: Any) -> None:
    """Change a client's row by hand, behind the configuration's back."""
    with bridge.services.db.session() as session:
        row = session.get(OidcClient, client_id)
        assert row is not None
        for name, value in changes.items():
            setattr(row, name, value)


@pytest.mark.parametrize("how", ["row", "configuration"])
def test_a_code_issued_with_pkce_still_needs_its_verifier_when_the_client_drops_pkce(
    bridge: Bridge, how: str
) -> None:
    # The code keeps its challenge: turning require_pkce off while it is outstanding is
    # no PKCE downgrade (RFC 9700 4.8.2).
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))  # the `lms` client, with PKCE
    if how == "row":
        edit_row(bridge, "lms", require_pkce=False)
    else:
        reconfigure(bridge, "lms", require_pkce=False)
    lms = bridge.client()
    refused(redeem(lms, flow.code, None), "invalid_request", "Missing 'code_verifier'")
    # The refusal burnt the code: the verifier cannot be fetched and tried afterwards.
    refused(redeem(lms, flow.code, flow.verifier), "invalid_grant", "Invalid 'code' in request.")


@pytest.mark.parametrize(
    "change",
    ["secret-removed-from-row", "made-public-by-configuration"],
)
def test_a_code_issued_without_pkce_dies_when_the_client_loses_its_secret(
    bridge: Bridge, change: str
) -> None:
    # Without a secret nothing binds a code without PKCE to the client: the public client
    # it became must not redeem it, and its old secret is no longer accepted either.
    flow = start(bridge)
    if change == "secret-removed-from-row":
        edit_row(bridge, "nopkce", secret_sha256=None)  # the row still says require_pkce false
    else:
        reconfigure(bridge, "nopkce", client_secret=None, require_pkce=True)
    refused(
        exchange(bridge, flow.code),
        "invalid_client",
        "The client cannot authenticate with methods: "
        "['client_secret_basic', 'client_secret_post', 'none']",
    )
    refused(
        exchange(bridge, flow.code, secret=None),
        "invalid_grant",
        "The code was issued without PKCE, which this client needs.",
    )
    refused(exchange(bridge, flow.code, secret=None), "invalid_grant", "Invalid 'code' in request.")


def test_a_code_issued_without_pkce_dies_when_the_configuration_starts_requiring_it(
    bridge: Bridge,
) -> None:
    # As test_a_code_issued_without_pkce_dies_when_the_client_starts_requiring_it, by a
    # configuration change synced at a restart rather than a hand-edited row.
    flow = start(bridge)
    reconfigure(bridge, "nopkce", require_pkce=True)
    refused(
        exchange(bridge, flow.code),
        "invalid_grant",
        "The code was issued without PKCE, which this client needs.",
    )
    refused(exchange(bridge, flow.code), "invalid_grant", "Invalid 'code' in request.")


@pytest.mark.parametrize("post_secret", [False, True], ids=["basic", "post"])
def test_a_code_without_pkce_works_once(bridge: Bridge, post_secret: bool) -> None:
    flow = start(bridge)
    assert exchange(bridge, flow.code, post_secret=post_secret).status_code == 200
    refused(
        exchange(bridge, flow.code, post_secret=post_secret),
        "invalid_grant",
        "Invalid 'code' in request.",
    )


# -- the migration that added the column --------------------------------------------------------


def test_clients_from_before_migration_0004_require_pkce(tmp_path: Path) -> None:
    # A row written before require_pkce existed was a client that had to send PKCE; it
    # must not come out of the upgrade allowed to leave PKCE out.
    db = Database(f"sqlite:///{tmp_path}/old.db")
    try:
        db.upgrade()
        with db.engine.begin() as connection:
            config = alembic_config(db.url)
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
            connection.execute(
                text(
                    "INSERT INTO oidc_clients (client_id, secret_sha256, redirect_uris, scopes,"
                    " enabled, updated_at) VALUES ('old', :secret, '[]', '[\"openid\"]', 1,"
                    " '2026-01-01 00:00:00')"
                ),
                {"secret": "0" * 64},  # confidential: the default decides, not the missing secret
            )
        db.upgrade()
        with db.session() as session:
            row = session.get(OidcClient, "old")
            assert row is not None
            assert row.require_pkce is True
            assert ProviderClient(row).require_pkce is True
    finally:
        db.dispose()


# -- malformed PKCE parameters ---------------------------------------------------------------------

CHALLENGE = s256(secrets.token_urlsafe(48))
S256 = ("code_challenge_method", "S256")
METHOD_WITHOUT_CHALLENGE = "code_challenge_method was sent without code_challenge."
NOT_S256 = "code_challenge_method must be S256."
PKCE_REQUIRED = "PKCE is required: send code_challenge with method S256."
MULTIPLE_CHALLENGES = "Multiple 'code_challenge' in request."
MULTIPLE_METHODS = "Multiple 'code_challenge_method' in request."


def authorize_pairs(bridge: Bridge, client_id: str, pkce: list[tuple[str, str]]) -> Any:
    """An authorization request with the PKCE parameters exactly as given, repeats included."""
    user_id, public_id = bridge.add_user(f"E{uuid.uuid4().hex[:8]}")
    redirect_uri = NOPKCE_REDIRECT if client_id == "nopkce" else LMS_REDIRECT
    args = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", "openid email"),
        ("state", "the-state"),
        ("nonce", "the-nonce"),
        *pkce,
    ]
    response = bridge.signed_in(user_id, public_id).get("/oauth2/authorize", query_string=args)
    assert redirect_base(response) == redirect_uri
    return response


MALFORMED: list[tuple[str, list[tuple[str, str]], str]] = [
    ("empty", [("code_challenge", "")], PKCE_REQUIRED),
    ("empty+S256", [("code_challenge", ""), S256], METHOD_WITHOUT_CHALLENGE),
    ("empty+empty-method", [("code_challenge", ""), ("code_challenge_method", "")], PKCE_REQUIRED),
    ("empty-method", [("code_challenge", CHALLENGE), ("code_challenge_method", "")], NOT_S256),
    (
        "twice",
        [("code_challenge", CHALLENGE), ("code_challenge", CHALLENGE), S256],
        MULTIPLE_CHALLENGES,
    ),
    (
        "then-empty",
        [("code_challenge", CHALLENGE), ("code_challenge", ""), S256],
        MULTIPLE_CHALLENGES,
    ),
    (
        "empty-then",
        [("code_challenge", ""), ("code_challenge", CHALLENGE), S256],
        METHOD_WITHOUT_CHALLENGE,
    ),
    (
        "empty-then-no-method",
        [("code_challenge", ""), ("code_challenge", CHALLENGE)],
        PKCE_REQUIRED,
    ),
    ("method-twice", [("code_challenge", CHALLENGE), S256, S256], MULTIPLE_METHODS),
    (
        "method-then-empty",
        [("code_challenge", CHALLENGE), S256, ("code_challenge_method", "")],
        MULTIPLE_METHODS,
    ),
    (
        "method-empty-then",
        [("code_challenge", CHALLENGE), ("code_challenge_method", ""), S256],
        NOT_S256,
    ),
    (
        "method-then-plain",
        [("code_challenge", CHALLENGE), S256, ("code_challenge_method", "plain")],
        MULTIPLE_METHODS,
    ),
]


# Every case for `lms`; for `nopkce` not those read as no PKCE at all, which it may leave
# out (an empty parameter counts as absent, RFC 6749 3.1; the repeated one of them is in
# test_a_repeated_pkce_parameter_is_refused_without_require_pkce).
MALFORMED_CASES = [
    pytest.param(client_id, pkce, description, id=f"{client_id}-{name}")
    for client_id in ("lms", "nopkce")
    for name, pkce, description in MALFORMED
    if client_id == "lms" or description != PKCE_REQUIRED
]


@pytest.mark.parametrize(("client_id", "pkce", "description"), MALFORMED_CASES)
def test_duplicate_or_empty_pkce_parameters_are_refused(
    bridge: Bridge, client_id: str, pkce: list[tuple[str, str]], description: str
) -> None:
    params = query(authorize_pairs(bridge, client_id, pkce))
    assert (params["error"], params["error_description"]) == ("invalid_request", description)
    assert params["state"] == "the-state"
    assert "code" not in params


@pytest.mark.parametrize(
    "pkce",
    [
        [("code_challenge", ""), ("code_challenge", CHALLENGE)],
        [("code_challenge_method", ""), S256],
    ],
    ids=["empty-then-challenge", "empty-then-method"],
)
def test_a_repeated_pkce_parameter_is_refused_without_require_pkce(
    bridge: Bridge, pkce: list[tuple[str, str]]
) -> None:
    # RFC 6749 3.1: request parameters must not be included more than once. (The first,
    # empty value was once read as "no PKCE", and this client may leave PKCE out.)
    params = query(authorize_pairs(bridge, "nopkce", pkce))
    assert "code" not in params
    assert (params["error"], params["error_description"]) == (
        "invalid_request",
        f"{pkce[0][0]} appears more than once.",
    )


# -- the client secret in the URL -----------------------------------------------------------------


BODY_ONLY = "The token request takes its parameters in the body only."


@pytest.mark.parametrize("client_id_in", ["body", "query"])
def test_a_client_secret_in_the_query_string_is_refused(bridge: Bridge, client_id_in: str) -> None:
    # A secret in the URL ends up in access logs and proxies (RFC 6749 2.3.1 allows it in
    # the body only); without PKCE it is all that binds the code, so it is not accepted.
    flow = start(bridge)
    body = {"grant_type": "authorization_code", "code": flow.code, "redirect_uri": NOPKCE_REDIRECT}
    url = f"/oauth2/token?client_secret={NOPKCE_SECRET}"
    if client_id_in == "body":
        body["client_id"] = "nopkce"
    else:
        url += "&client_id=nopkce"
    refused(bridge.client().post(url, data=body), "invalid_request", BODY_ONLY)
    # Also for a client with PKCE, whose verifier is right.
    user_id, public_id = bridge.add_user()
    pkce = authorize(bridge.signed_in(user_id, public_id))
    response = bridge.client().post(
        f"/oauth2/token?client_secret={LMS_SECRET}",
        data={
            "grant_type": "authorization_code",
            "code": pkce.code,
            "redirect_uri": LMS_REDIRECT,
            "client_id": "lms",
            "code_verifier": pkce.verifier,
        },
    )
    refused(response, "invalid_request", BODY_ONLY)


def test_no_token_parameter_is_taken_from_the_url(bridge: Bridge) -> None:
    # Not the code, not the redirect URI: the body only (RFC 6749 4.1.3).
    user_id, public_id = bridge.add_user()
    flow = authorize(bridge.signed_in(user_id, public_id))
    response = bridge.client().post(
        f"/oauth2/token?redirect_uri={LMS_REDIRECT}",
        data={
            "grant_type": "authorization_code",
            "code": flow.code,
            "code_verifier": flow.verifier,
        },
        headers=basic("lms", LMS_SECRET),
    )
    refused(response, "invalid_request", BODY_ONLY)
    # The code was not used up by the refused request.
    assert redeem(bridge.client(), flow.code, flow.verifier).status_code == 200
