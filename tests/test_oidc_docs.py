"""docs/oidc.md and the OpenID Connect / OAuth2 examples stay true to the code.

The troubleshooting table of docs/oidc.md lists exactly the OIDC reason codes (every
`errors.OidcRefused` subclass, the base included, plus the identity and routing
refusals an OIDC login can end in), each with its status; the claims table lists exactly
the claim names the connector recognizes, in order; and both example configurations
load, with the connection types and the settings the page describes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sso_bridge import errors
from sso_bridge.connectors.oidc import DEFAULT_CLAIMS
from sso_bridge.settings import OAuth2Connection, OidcConnection, load_settings
from tests.doc_tables import ROW, assert_troubleshooting_table, section

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "oidc.md"
ENTRA_EXAMPLE = ROOT / "examples" / "oidc-entra.toml"
OAUTH2_EXAMPLE = ROOT / "examples" / "oauth2-portal.toml"


def test_the_troubleshooting_table_matches_the_reason_codes() -> None:
    assert_troubleshooting_table(DOC, errors.OidcRefused)


def test_the_claims_table_lists_the_names_the_connector_recognizes() -> None:
    table = {
        field: tuple(re.findall(r"`([^`]+)`", names))
        for field, names, _ in ROW.findall(section(DOC, r"\d+\.\d+ Claims"))
    }
    assert table == dict(DEFAULT_CLAIMS)


def test_the_entra_example_loads_with_an_oidc_connection() -> None:
    settings = load_settings(ENTRA_EXAMPLE)
    assert settings.base_url.startswith("https://")
    oidc = {cid: c for cid, c in settings.connections.items() if c.type == "oidc"}
    assert list(oidc) == ["entra"], f"{ENTRA_EXAMPLE.name} should hold one oidc connection"
    entra = oidc["entra"]
    assert isinstance(entra, OidcConnection)
    tenant = re.fullmatch(
        r"https://login\.microsoftonline\.com/([0-9a-f-]{36})/v2\.0", entra.issuer
    )
    assert tenant, entra.issuer
    assert entra.subject_claim == "oid"
    assert entra.allowed_claim_values == {"tid": [tenant.group(1)]}
    assert entra.scopes == ["openid", "profile", "email"]
    assert entra.client_auth_method in ("client_secret_basic", "client_secret_post")
    assert entra.client_secret is not None
    assert "HS256" not in entra.id_token_algorithms
    assert settings.provider.signing_key_files
    assert settings.lms.client_id in [client.client_id for client in settings.provider.clients]


def test_the_entra_secret_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the example's comment promises: the environment overrides the placeholder.
    monkeypatch.setenv("SSO_BRIDGE_CONNECTIONS__ENTRA__CLIENT_SECRET", "from-the-environment")
    entra = load_settings(ENTRA_EXAMPLE).connections["entra"]
    assert isinstance(entra, OidcConnection)
    assert entra.client_secret is not None
    assert entra.client_secret.get_secret_value() == "from-the-environment"


def test_the_entra_secret_comes_from_the_secrets_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "connections__entra__client_secret").write_text("from-a-file\n")
    monkeypatch.setenv("SSO_BRIDGE_SECRETS_DIR", str(tmp_path))
    entra = load_settings(ENTRA_EXAMPLE).connections["entra"]
    assert isinstance(entra, OidcConnection)
    assert entra.client_secret is not None
    assert entra.client_secret.get_secret_value() == "from-a-file"


def test_the_oauth2_example_loads_with_an_oauth2_connection() -> None:
    settings = load_settings(OAUTH2_EXAMPLE)
    assert settings.base_url.startswith("https://")
    oauth2 = {cid: c for cid, c in settings.connections.items() if c.type == "oauth2"}
    assert len(oauth2) == 1, f"{OAUTH2_EXAMPLE.name} should hold one oauth2 connection"
    (portal,) = oauth2.values()
    assert isinstance(portal, OAuth2Connection)
    assert portal.profile_url.startswith("https://")
    assert portal.subject_field and portal.subject_field != "email"
    assert portal.use_pkce
    # Only top-level profile fields can be mapped: no dotted names in `attributes`.
    assert portal.attributes and all("." not in name for name in portal.attributes.values())
    assert settings.lms.client_id in [client.client_id for client in settings.provider.clients]
