"""The `sso-bridge` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sso_bridge.cli import main
from sso_bridge.serve import check_workers
from sso_bridge.settings import ConfigError, Settings

from .conftest import Keys


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
