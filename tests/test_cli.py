"""The `sso-bridge` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from sso_bridge.checks import moodle_oidc_client
from sso_bridge.cli import main
from sso_bridge.serve import check_workers
from sso_bridge.settings import ConfigError, Settings

from .conftest import Keys
from .fake_moodle import FakeMoodle


def config_file(tmp_path: Path, keys: Keys, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
base_url = "http://127.0.0.1:5000"
var_dir = "{tmp_path}/var"
[database]
url = "sqlite:///{tmp_path}/cli.db"
[log]
level = "WARNING"
[provider]
signing_key_files = ["{keys.provider}"]
[[provider.clients]]
client_id = "lms"
client_secret = "{"s" * 40}"
redirect_uris = ["http://127.0.0.1:5000/lms/callback"]
[connections.acme]
type = "token"
issuer = "acme-portal"
keys = [{{ kid = "ed-1", alg = "EdDSA", public_key_file = "{keys.public["ed"]}" }}]
{extra}
""")
    return path


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def mint(config: str | Path, key_file: Path, sub: str, *extra: str) -> str:
    """`sso-bridge token mint` for connection acme with key id ed-1; the printed token."""
    result = run(
        "--config",
        str(config),
        "token",
        "mint",
        "--connection",
        "acme",
        "--key",
        str(key_file),
        "--kid",
        "ed-1",
        "--sub",
        sub,
        *extra,
    )
    assert result.exit_code == 0, result.output
    return str(result.output.strip())


def test_check_passes_on_a_good_configuration(tmp_path: Path, keys: Keys) -> None:
    result = run("--config", str(config_file(tmp_path, keys)), "check", "--json")
    rows = json.loads(result.output)
    assert result.exit_code == 0, rows
    assert {row["check"] for row in rows} >= {
        "configuration",
        "database reachable",
        "store reachable",
        "provider signing keys",
        "connection acme: keys",
    }


def test_check_reports_every_problem_and_fails(tmp_path: Path, keys: Keys) -> None:
    path = config_file(tmp_path, keys)
    path.write_text(path.read_text().replace(str(keys.public["ed"]), "/nonexistent/ed.pem"))
    result = run("--config", str(path), "check")
    assert result.exit_code == 1
    assert "FAIL connection acme: keys" in result.output
    assert "/nonexistent/ed.pem" in result.output


def test_check_names_the_bad_key(tmp_path: Path, keys: Keys) -> None:
    path = config_file(tmp_path, keys, "[store]\ntimeout = 0\n")
    result = run("--config", str(path), "check")
    assert result.exit_code == 1
    assert "store.timeout" in result.output


def test_a_bad_configuration_stops_other_commands(tmp_path: Path, keys: Keys) -> None:
    path = config_file(tmp_path, keys, "[sesion]\nlifetime = 5\n")
    result = CliRunner().invoke(main, ["--config", str(path), "users", "list"])
    assert result.exit_code == 2
    assert "sesion" in result.output


def test_mint_then_verify_without_consuming(tmp_path: Path, keys: Keys) -> None:
    path = str(config_file(tmp_path, keys))
    token = mint(
        path,
        keys.private["ed"],
        "E42",
        "--claim",
        "email=e42@example.com",
        "--claim",
        "groups=a,b",
        "--next",
        "/courses/x",
    )
    for _ in range(2):  # verifying twice: the jti is not consumed
        result = run("--config", path, "token", "verify", "--connection", "acme", "--json", token)
        data = json.loads(result.output)
        assert result.exit_code == 0, data
        assert data["subject"] == "E42"
        assert data["identity"]["groups"] == ["a", "b"]
        assert data["next"] == "/courses/x"


def test_verify_names_the_reason(tmp_path: Path, keys: Keys) -> None:
    path = str(config_file(tmp_path, keys))
    token = mint(path, keys.private["other-ed"], "E42")
    result = run("--config", path, "token", "verify", "--connection", "acme", token)
    assert result.exit_code == 1
    assert result.output.startswith("INVALID token_signature_invalid")


def test_users_and_audit_after_a_login(tmp_path: Path, keys: Keys) -> None:
    from sso_bridge.settings import load_settings

    from .conftest import build_app

    path = config_file(tmp_path, keys)
    app = build_app(load_settings(path))
    token = mint(path, keys.private["ed"], "E7", "--claim", "email=e7@example.com")
    assert app.test_client().post("/token/acme", data={"token": token}).status_code == 303
    assert app.test_client().post("/token/acme", data={"token": token}).status_code == 400
    users = json.loads(run("--config", str(path), "users", "list", "--json").output)
    assert [u["email"] for u in users] == ["e7@example.com"]
    shown = json.loads(
        run("--config", str(path), "users", "show", "e7@example.com", "--json").output
    )
    assert shown["links"] == ["acme:E7"]
    events = json.loads(run("--config", str(path), "audit", "tail", "--json").output)
    assert [(e["outcome"], e["reason"]) for e in events] == [
        ("success", "created"),
        ("failure", "token_replayed"),
    ]


def test_certs_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    result = run(
        "certs", "generate", str(out), "--type", "ec", "--public-out", str(tmp_path / "k.pub.pem")
    )
    assert result.exit_code == 0
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    again = CliRunner().invoke(main, ["certs", "generate", str(out)])
    assert again.exit_code != 0
    assert "refusing to overwrite" in again.output


def test_several_workers_need_redis(settings: Settings) -> None:
    with pytest.raises(ConfigError) as info:
        check_workers(settings, 2)
    assert "store.url" in str(info.value)
    check_workers(settings, 1)
    check_workers(Settings(**{**settings.model_dump(), "store": {"url": "redis://x"}}), 4)


# -- check: Moodle signing in through the provider --------------------------------------------

MOODLE_ROW = "Moodle sign-in through the provider"
MOODLE_OIDC_LMS = {
    "type": "moodle",
    "api_url": "https://learn.example.com",
    "api_token": "t" * 32,
    "moodle_login": "oidc",
}


def moodle_oidc_config(tmp_path: Path, keys: Keys, moodle: FakeMoodle, client: str = "") -> Path:
    """The CLI config with a reachable (fake) Moodle, `moodle_login = "oidc"`, and ``client``
    appended to the `lms` client's table."""
    path = config_file(
        tmp_path,
        keys,
        f'[lms]\ntype = "moodle"\napi_url = "{moodle.base_url}"\n'
        f'api_token = "{moodle.token}"\nmoodle_login = "oidc"\n',
    )
    redirect = 'redirect_uris = ["http://127.0.0.1:5000/lms/callback"]\n'
    path.write_text(path.read_text().replace(redirect, redirect + client))
    return path


def test_check_warns_when_moodle_signs_in_through_a_client_that_requires_pkce(
    tmp_path: Path, keys: Keys
) -> None:
    with FakeMoodle() as moodle:
        result = run("--config", str(moodle_oidc_config(tmp_path, keys, moodle)), "check")
        moodle.check()
    # A warning, not a failure: a plugin that sends PKCE would work as configured.
    assert result.exit_code == 0, result.output
    assert (
        f"WARN {MOODLE_ROW}: provider.clients.0.require_pkce is true: Moodle's OIDC plugins "
        "send no PKCE, so the provider refuses their sign-in; set it to false "
        "(docs/lms.md, 2.4)"
    ) in result.output.splitlines()


def test_check_is_quiet_once_the_moodle_client_drops_pkce(tmp_path: Path, keys: Keys) -> None:
    with FakeMoodle() as moodle:
        path = moodle_oidc_config(tmp_path, keys, moodle, "require_pkce = false\n")
        result = run("--config", str(path), "check", "--json")
        moodle.check()
    rows = {row["check"]: row for row in json.loads(result.output)}
    assert result.exit_code == 0, rows
    assert rows[MOODLE_ROW] == {"check": MOODLE_ROW, "ok": True}
    assert rows["LMS adapter moodle"]["ok"] is True
    assert "provider client lms" not in rows  # the one client that needs it: no warning


def test_check_warns_of_pkce_turned_off_where_moodle_does_not_need_it(
    tmp_path: Path, keys: Keys
) -> None:
    path = config_file(tmp_path, keys)
    redirect = 'redirect_uris = ["http://127.0.0.1:5000/lms/callback"]\n'
    path.write_text(path.read_text().replace(redirect, redirect + "require_pkce = false\n"))

    result = run("--config", str(path), "check")

    assert result.exit_code == 0, result.output
    assert (
        "WARN provider client lms: provider.clients.0.require_pkce is false: turn PKCE back on "
        "unless this client cannot send it (docs/lms.md, 2.4)"
    ) in result.output.splitlines()


def test_a_public_moodle_client_is_told_to_get_a_secret(make_settings: Any) -> None:
    settings = make_settings(
        lms=MOODLE_OIDC_LMS,
        provider={
            "clients": [{"client_id": "lms", "redirect_uris": ["https://learn.example.com/x"]}]
        },
    )
    assert moodle_oidc_client(settings) == (
        "provider.clients.0 ('lms') is a public client: Moodle's OIDC plugins send no PKCE, so "
        "the provider refuses their sign-in; set provider.clients.0.client_secret and "
        "provider.clients.0.require_pkce = false (docs/lms.md, 2.4)"
    )


def test_moodle_without_a_provider_client_stops_the_start(make_settings: Any) -> None:
    with pytest.raises(ValidationError) as info:
        make_settings(lms=MOODLE_OIDC_LMS, provider={"clients": []})
    assert (
        'lms.moodle_login = "oidc" needs a [[provider.clients]] entry with client_id '
        "= 'lms' (lms.client_id): Moodle signs people in through it"
    ) in str(info.value)
