"""The web layer: operations endpoints, headers, cookies, /login and /logout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sso_bridge.settings import Settings

from .conftest import LMS_URL, Minter, build_app


def test_healthz(client: Any) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_checks_database_and_store(client: Any) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"database": "ok", "store": "ok"}


def test_readyz_fails_and_logins_stop_when_redis_is_down(
    make_settings: Callable[..., Settings], redis_server: Any, mint: Minter
) -> None:
    app = build_app(make_settings(store={"url": redis_server.url, "timeout": 0.5}))
    client = app.test_client()
    redis_server.stop()
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json["checks"]["store"] == "store_unavailable"
        # Fail closed: without the replay cache the token is refused, not accepted unchecked.
        response = client.post("/token/acme", data={"token": mint()})
        assert response.status_code == 503
        assert "store_unavailable" in response.get_data(as_text=True)
    finally:
        redis_server.start()
    assert client.get("/readyz").status_code == 200
    assert client.post("/token/acme", data={"token": mint()}).status_code == 303


def test_metrics_count_logins_by_outcome(client: Any, mint: Minter) -> None:
    client.post("/token/acme", data={"token": mint()})
    client.post("/token/acme", data={"token": mint(aud="x")})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'sso_bridge_logins_total{connection="acme",outcome="success"}' in text
    assert 'sso_bridge_logins_total{connection="acme",outcome="token_audience_mismatch"}' in text
    assert "sso_bridge_login_duration_seconds_bucket" in text


def test_security_headers(client: Any) -> None:
    response = client.get("/login")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in response.headers  # http base URL


def test_session_cookie_attributes(client: Any, mint: Minter) -> None:
    response = client.post("/token/acme", data={"token": mint()})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # the base URL is http://127.0.0.1


def test_cookies_are_secure_and_hsts_is_sent_on_https(
    make_settings: Callable[..., Settings], mint: Minter, keys: Any
) -> None:
    import time
    import uuid

    from sso_bridge.keyfiles import mint_handoff_token

    app = build_app(make_settings(base_url="https://sso.example.com"))
    now = int(time.time())
    token = mint_handoff_token(
        keys.private["ed"],
        "ed-1",
        {
            "iss": "acme-portal",
            "aud": "https://sso.example.com/token/acme",
            "sub": "E1",
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
        },
    )
    response = app.test_client().post(
        "/token/acme", data={"token": token}, base_url="https://sso.example.com"
    )
    assert response.status_code == 303
    assert "Secure" in response.headers["Set-Cookie"]
    assert "Strict-Transport-Security" in response.headers


def test_absolute_urls_ignore_the_host_header(client: Any, mint: Minter) -> None:
    response = client.post(
        "/token/acme",
        data={"token": mint()},
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
    )
    assert response.status_code == 303
    assert "evil.example" not in response.headers["Location"]
    discovery = client.get(
        "/.well-known/openid-configuration", headers={"Host": "evil.example"}
    ).json
    assert "evil.example" not in str(discovery)


def test_the_handoff_goes_through_the_lms_initiate_login(client: Any, mint: Minter) -> None:
    from urllib.parse import parse_qs, urlsplit

    response = client.post("/token/acme", data={"token": mint(), "next": "/courses/safety-101"})
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{LMS_URL}/login"
    query = parse_qs(location.query)
    assert query["iss"] == ["http://127.0.0.1:5000"]
    assert query["target_link_uri"] == [f"{LMS_URL}/courses/safety-101"]


def test_a_signed_next_wins_over_the_form_field(client: Any, mint: Minter) -> None:
    response = client.post(
        "/token/acme", data={"token": mint(next="/courses/gdpr"), "next": "/courses/other"}
    )
    assert "courses%2Fgdpr" in response.headers["Location"]


def test_open_redirect_in_next_is_refused_before_anything_happens(
    app: Any, client: Any, mint: Minter
) -> None:
    token = mint()
    response = client.post("/token/acme", data={"token": token, "next": "//evil.example"})
    assert response.status_code == 400
    assert "next_not_allowed" in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    # The token was not used up by the refused request.
    assert client.post("/token/acme", data={"token": token}).status_code == 303


def test_open_redirect_in_a_signed_next_is_refused(client: Any, mint: Minter) -> None:
    response = client.post("/token/acme", data={"token": mint(next="https://evil.example/")})
    assert response.status_code == 400
    assert "next_not_allowed" in response.get_data(as_text=True)


def test_login_chooser_and_discovery(make_settings: Callable[..., Settings], keys: Any) -> None:
    from .conftest import settings_dict  # noqa: F401 - documents where the shape comes from

    app = build_app(make_settings())
    client = app.test_client()
    # Only `acme` has a portal URL, so /login sends people straight there.
    response = client.get("/login?next=/courses/x")
    assert response.status_code == 303
    assert response.headers["Location"] == "http://127.0.0.1:5000/portal/"
    assert client.get("/login?next=//evil").status_code == 400


def test_logout_ends_the_session(client: Any, mint: Minter) -> None:
    client.post("/token/acme", data={"token": mint()})
    # With a session, /login goes straight into the LMS; without, to the portal.
    assert client.get("/login").headers["Location"].startswith(f"{LMS_URL}/login?")
    response = client.get("/logout")
    assert response.status_code == 200
    assert "signed out" in response.get_data(as_text=True)
    assert client.get("/login").headers["Location"] == "http://127.0.0.1:5000/portal/"


def test_a_refused_login_ends_the_browsers_earlier_session(client: Any, mint: Minter) -> None:
    # Provisioning may have changed the person's record before the refusal: an older
    # session must not carry on with it.
    client.post("/token/acme", data={"token": mint()})
    assert client.get("/login").headers["Location"].startswith(f"{LMS_URL}/login?")

    refused = client.post("/token/acme", data={"token": mint(employment_status="terminated")})

    assert refused.status_code == 403
    assert client.get("/login").headers["Location"] == "http://127.0.0.1:5000/portal/"


def test_last_login_is_noted_for_completed_logins_only(client: Any, mint: Minter) -> None:
    from sqlalchemy import select

    from sso_bridge.models import IdentityLink, User

    db = client.application.extensions["sso_bridge"].db

    def last_logins() -> tuple[Any, Any]:
        with db.session() as session:
            user = session.scalars(select(User)).one()
            link = session.scalars(select(IdentityLink)).one()
            return user.last_login_at, link.last_login_at

    assert client.post("/token/acme", data={"token": mint()}).status_code == 303
    first = last_logins()
    assert first[0] is not None and first[0] == first[1]
    assert client.post("/token/acme", data={"token": mint()}).status_code == 303
    second = last_logins()
    assert second[0] > first[0] and second[0] == second[1]
    # A refused login (a leaver now) is not a login.
    refused = client.post("/token/acme", data={"token": mint(employment_status="terminated")})
    assert refused.status_code == 403
    assert last_logins() == second


def test_unknown_path_shows_the_error_page(client: Any) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert "Reference:" in response.get_data(as_text=True)


def test_tokens_and_secrets_never_reach_the_log(
    make_settings: Callable[..., Settings], mint: Minter, capsys: Any
) -> None:
    from sso_bridge.logs import get_logger

    app = build_app(make_settings(log={"level": "DEBUG", "format": "json"}))
    get_logger("sso_bridge.test").info("probe", token="abc", client_secret="xyz")
    client = app.test_client()
    good, bad = mint(), mint(aud="elsewhere")
    client.post("/token/acme", data={"token": good, "next": "/courses/x"})
    client.post("/token/acme", data={"token": good})  # replay
    client.post("/token/acme", data={"token": bad})
    output = capsys.readouterr().out
    assert "token_replayed" in output and "token_audience_mismatch" in output
    for secret in (good, bad, good.split(".")[2], bad.split(".")[2], "xyz"):
        assert secret not in output


def test_a_debug_code_flow_logs_no_code_or_token(
    make_settings: Callable[..., Settings], mint: Minter, capsys: Any
) -> None:
    from urllib.parse import parse_qs, urlsplit

    from .conftest import CLIENT_SECRET
    from .test_provider import basic, s256

    app = build_app(make_settings(log={"level": "DEBUG", "format": "json"}))
    client = app.test_client()
    assert client.post("/token/acme", data={"token": mint()}).status_code == 303
    verifier = "v" * 64
    authorized = client.get(
        "/oauth2/authorize",
        query_string={
            "response_type": "code",
            "client_id": "lms",
            "redirect_uri": f"{LMS_URL}/callback",
            "scope": "openid profile",
            "state": "st",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        },
    )
    code = parse_qs(urlsplit(authorized.headers["Location"]).query)["code"][0]
    tokens = client.post(
        "/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": f"{LMS_URL}/callback",
            "code_verifier": verifier,
        },
        headers=basic("lms", CLIENT_SECRET),
    ).json
    output = capsys.readouterr().out
    for secret in (code, verifier, tokens["access_token"], tokens["id_token"], CLIENT_SECRET):
        assert secret not in output


def test_https_session_cookie_has_the_host_prefix(
    make_settings: Callable[..., Settings], keys: Any
) -> None:
    settings = make_settings(base_url="https://sso.example.com")
    assert settings.session_cookie == "__Host-sso_bridge_session"
    assert make_settings().session_cookie == "sso_bridge_session"


def test_client_address_comes_from_trusted_proxies_only(
    make_settings: Callable[..., Settings], mint: Minter
) -> None:
    from sqlalchemy import select

    from sso_bridge.models import AuditEvent

    for hops, expected in ((0, "127.0.0.1"), (1, "203.0.113.9")):
        app = build_app(make_settings(trusted_proxies=hops))
        app.test_client().post(
            "/token/acme",
            data={"token": mint()},
            headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"},
        )
        with app.extensions["sso_bridge"].db.session() as session:
            addr = session.scalars(select(AuditEvent.remote_addr)).all()[-1]
        assert addr == expected


def test_oidc_endpoints_fail_closed_when_redis_is_down(
    make_settings: Callable[..., Settings], redis_server: Any, mint: Minter
) -> None:
    from .conftest import CLIENT_SECRET
    from .test_provider import basic, s256

    app = build_app(make_settings(store={"url": redis_server.url, "timeout": 0.5}))
    client = app.test_client()
    assert client.post("/token/acme", data={"token": mint()}).status_code == 303
    redis_server.stop()
    try:
        authorize = client.get(
            "/oauth2/authorize",
            query_string={
                "response_type": "code",
                "client_id": "lms",
                "redirect_uri": f"{LMS_URL}/callback",
                "scope": "openid",
                "code_challenge": s256("v" * 64),
                "code_challenge_method": "S256",
            },
        )
        token = client.post(
            "/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": "x",
                "code_verifier": "v" * 64,
                "redirect_uri": f"{LMS_URL}/callback",
            },
            headers=basic("lms", CLIENT_SECRET),
        )
    finally:
        redis_server.start()
    assert authorize.status_code == 503
    assert "Location" not in authorize.headers
    assert token.status_code == 503
    assert "access_token" not in token.get_data(as_text=True)
