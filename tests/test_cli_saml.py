"""The command line for SAML: import an IdP's metadata, rotate SP keys, check a connection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from sso_bridge.cli import main
from sso_bridge.keyfiles import generate_private_key, self_signed_certificate, write_private_key

from .conftest import Keys
from .forward_proxy import ForwardProxy
from .test_cli import config_file


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def saml_block(idp: Any, tmp_path: Path, days: int = 365) -> str:
    key = generate_private_key("rsa")
    write_private_key(tmp_path / f"sp{days}.key", key)
    (tmp_path / f"sp{days}.crt").write_bytes(self_signed_certificate(key, "sp", days))
    return f"""
[connections.hr]
type = "saml"
idp_metadata_url = "{idp.metadata_url}"
sp_key_file = "{tmp_path / f"sp{days}.key"}"
sp_cert_file = "{tmp_path / f"sp{days}.crt"}"
"""


def test_import_metadata_prints_a_working_block(saml_idp: Any, tmp_path: Path, keys: Keys) -> None:
    result = run("connections", "import-metadata", saml_idp.metadata_url, "--id", "hr")
    assert result.exit_code == 0, result.output
    assert f"IdP entity id:   {saml_idp.entity_id}" in result.output
    assert "signing cert:    sha256 " in result.output
    block = result.output.split("\n\n", 1)[1]
    # The printed block is a valid connection as it stands.
    path = config_file(tmp_path, keys, block)
    listed = json.loads(run("--config", str(path), "connections", "list", "--json").output)
    assert {
        "id": "hr",
        "type": "saml",
        "name": "hr",
        "endpoint": "http://127.0.0.1:5000/saml/hr/metadata",
    } in listed


def test_import_metadata_refuses_what_is_not_idp_metadata(tmp_path: Path) -> None:
    (tmp_path / "bad.xml").write_text("<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>")
    result = CliRunner().invoke(
        main, ["connections", "import-metadata", str(tmp_path / "bad.xml"), "--id", "hr"]
    )
    assert result.exit_code != 0
    assert "DTD" in result.output
    result = CliRunner().invoke(main, ["connections", "import-metadata", "x.xml", "--id", "Bad"])
    assert "lowercase slug" in result.output


def test_check_reaches_the_idp_and_warns_of_expiring_certificates(
    saml_idp: Any, tmp_path: Path, keys: Keys
) -> None:
    good = config_file(tmp_path, keys, saml_block(saml_idp, tmp_path))
    result = run("--config", str(good), "check", "--json")
    rows = {r["check"]: r for r in json.loads(result.output)}
    assert result.exit_code == 0, rows
    assert rows["connection hr: IdP metadata"]["ok"]
    expiring = config_file(tmp_path, keys, saml_block(saml_idp, tmp_path, days=10))
    result = run("--config", str(expiring), "check")
    assert result.exit_code == 1
    assert "expires in 9 days: run `sso-bridge certs rotate`" in result.output


def test_check_names_an_unreachable_idp(tmp_path: Path, keys: Keys) -> None:
    block = saml_block(type("Idp", (), {"metadata_url": "http://127.0.0.1:9/md"})(), tmp_path)
    path = config_file(tmp_path, keys, block)
    result = run("--config", str(path), "check")
    assert result.exit_code == 1
    assert "FAIL connection hr: IdP metadata: saml_metadata_unavailable" in result.output


def test_certs_rotate_writes_the_next_pair_and_explains(
    saml_idp: Any, tmp_path: Path, keys: Keys
) -> None:
    path = config_file(tmp_path, keys, saml_block(saml_idp, tmp_path))
    result = run(
        "--config",
        str(path),
        "certs",
        "rotate",
        "--connection",
        "hr",
        "--dir",
        str(tmp_path / "next"),
    )
    assert result.exit_code == 0, result.output
    written = sorted(p.suffix for p in (tmp_path / "next").iterdir())
    assert written == [".crt", ".key"]
    assert "sp_next_cert_file = " in result.output
    again = CliRunner().invoke(
        main,
        [
            "--config",
            str(path),
            "certs",
            "rotate",
            "--connection",
            "hr",
            "--dir",
            str(tmp_path / "next"),
        ],
    )
    assert again.exit_code != 0 and "refusing to overwrite" in again.output


def test_check_fetches_idp_metadata_through_the_outbound_proxy(
    saml_idp: Any, tmp_path: Path, keys: Keys
) -> None:
    # As the running bridge does: a check that went direct could pass where the bridge fails.
    with ForwardProxy() as proxy:
        block = f'outbound_proxy = "{proxy.url}"\n' + saml_block(saml_idp, tmp_path)
        text = config_file(tmp_path, keys).read_text()
        path = tmp_path / "proxied.toml"
        # Top-level keys go before the first table.
        path.write_text(block.split("\n", 1)[0] + "\n" + text + block.split("\n", 1)[1])
        result = run("--config", str(path), "check", "--json")
    rows = {r["check"]: r for r in json.loads(result.output)}
    assert rows["connection hr: IdP metadata"]["ok"], rows
    assert any(saml_idp.metadata_url in line for line in proxy.seen), proxy.seen
