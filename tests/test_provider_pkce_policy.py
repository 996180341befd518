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
from joserfc import jwt

from sso_bridge.models import OidcClient
from tests.html_forms import form_fields
from tests.test_provider import (
    BASE,
    LMS_REDIRECT,
    NOPKCE_REDIRECT,
    NOPKCE_SECRET,
    OTHER_SECRET,
    SPA_REDIRECT,
    Authorized,
    Bridge,
    authorize,
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
