"""Shared fixtures: keys, settings, an app per test, real Redis and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jinja2 import StrictUndefined

from sso_bridge import create_app
from sso_bridge.keyfiles import (
    generate_private_key,
    mint_handoff_token,
    write_private_key,
    write_public_key,
)
from sso_bridge.settings import Settings

from .oidc_op import oidc_op_fixture  # noqa: F401 - a pytest fixture (named oidc_op)
from .saml_idp import saml_idp_fixture  # noqa: F401 - a pytest fixture (named saml_idp)
from .scim_server import scim_server_fixture  # noqa: F401 - a pytest fixture (named scim_server)
from .services import postgres_server, redis_server  # noqa: F401 - pytest fixtures

BASE_URL = "http://127.0.0.1:5000"
LMS_URL = "http://127.0.0.1:5000/lms"
CLIENT_SECRET = "s" * 40


class Keys:
    """Key files for one test session: one key per token algorithm, and provider keys."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.private: dict[str, Path] = {}
        self.public: dict[str, Path] = {}
        for name, kind in (
            ("ed", "ed25519"),
            ("ec", "ec"),
            ("rsa", "rsa"),
            ("other-ed", "ed25519"),
        ):
            key = generate_private_key(kind)
            write_private_key(root / f"{name}.pem", key)
            write_public_key(root / f"{name}.pub.pem", key.public_key())
            self.private[name] = root / f"{name}.pem"
            self.public[name] = root / f"{name}.pub.pem"
        self.hs_secret = root / "hs.secret"
        self.hs_secret.write_bytes(b"0123456789abcdef0123456789abcdef-hs256")
        self.private["hs"] = self.hs_secret
        self.provider = root / "provider.pem"
        write_private_key(self.provider, generate_private_key("rsa"))


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("keys"))


KIDS = {"ed": "ed-1", "ec": "ec-1", "rsa": "rsa-1", "hs": "hs-1"}


def settings_dict(keys: Keys, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "base_url": BASE_URL,
        "var_dir": tmp_path / "var",
        "database": {"url": f"sqlite:///{tmp_path}/bridge.db"},
        "log": {"format": "console", "level": "WARNING"},
        "lms": {"base_url": LMS_URL, "client_id": "lms", "allowed_hosts": ["courses.example.com"]},
        "provider": {
            "signing_key_files": [keys.provider],
            "clients": [
                {
                    "client_id": "lms",
                    "client_secret": CLIENT_SECRET,
                    "redirect_uris": [f"{LMS_URL}/callback"],
                    "initiate_login_uri": f"{LMS_URL}/login",
                }
            ],
        },
        "connections": {
            "acme": {
                "type": "token",
                "display_name": "Acme HR",
                "issuer": "acme-portal",
                "algorithms": ["EdDSA", "ES256", "RS256", "HS256"],
                "keys": [
                    {"kid": "ed-1", "alg": "EdDSA", "public_key_file": keys.public["ed"]},
                    {"kid": "ec-1", "alg": "ES256", "public_key_file": keys.public["ec"]},
                    {"kid": "rsa-1", "alg": "RS256", "public_key_file": keys.public["rsa"]},
                    {"kid": "hs-1", "alg": "HS256", "secret_file": keys.hs_secret},
                ],
                "portal_url": "http://127.0.0.1:5000/portal/",
            },
            "globex": {
                "type": "token",
                "issuer": "globex-portal",
                "keys": [{"kid": "ed-1", "alg": "EdDSA", "public_key_file": keys.public["ed"]}],
            },
        },
    }
    for key, value in overrides.items():
        data[key] = value
    return data


@pytest.fixture
def make_settings(keys: Keys, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return Settings(**settings_dict(keys, tmp_path, **overrides))

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def build_app(settings: Settings) -> Any:
    from sso_bridge.provider import sync_clients

    app = create_app(settings)
    app.config["TESTING"] = True
    app.jinja_env.undefined = StrictUndefined
    services = app.extensions["sso_bridge"]
    services.db.upgrade()
    sync_clients(services.db, settings)
    return app


def accounts_and_login_reasons(app: Any) -> tuple[int, list[str]]:
    """How many users ``app`` holds, and the reason of every login audit event, in order:
    what a refused attack must leave (no user) and say (its reason code)."""
    from sqlalchemy import func, select

    from sso_bridge.models import AuditEvent, User

    with app.extensions["sso_bridge"].db.session() as session:
        users = session.scalar(select(func.count()).select_from(User)) or 0
        reasons = list(
            session.scalars(
                select(AuditEvent.reason).where(AuditEvent.event == "login").order_by(AuditEvent.id)
            )
        )
    return users, reasons


@pytest.fixture
def app(settings: Settings) -> Iterator[Any]:
    application = build_app(settings)
    yield application
    application.extensions["sso_bridge"].close()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


Minter = Callable[..., str]


@pytest.fixture
def mint(keys: Keys) -> Minter:
    """Mint a valid handoff token for connection `acme`; override claims or the key."""

    def make(
        key: str = "ed",
        connection: str = "acme",
        kid: str | None = None,
        drop: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": "acme-portal" if connection == "acme" else "globex-portal",
            "aud": f"{BASE_URL}/token/{connection}",
            "sub": "E1001",
            "iat": now,
            "exp": now + 60,
            "jti": uuid.uuid4().hex,
            "email": "ada@example.com",
            "given_name": "Ada",
            "family_name": "Lovelace",
            "department": "Engineering",
            "location": "London",
            "locale": "en-GB",
            "manager_id": "E0001",
            "groups": ["engineering", "staff"],
        }
        payload.update(claims)
        for name in drop:
            payload.pop(name, None)
        return mint_handoff_token(keys.private[key], kid or KIDS.get(key, key), payload)

    return make
