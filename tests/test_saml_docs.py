"""docs/saml.md and examples/saml-idp.toml stay true to the code.

The troubleshooting table of docs/saml.md lists exactly the SAML reason codes (every
`errors.SamlRefused` subclass, plus the identity and routing refusals a SAML login can
end in), each with its status; the attribute table lists exactly the names the
connector recognizes; and the example configuration loads, with its commented ADFS
attribute block valid once uncommented.
"""

from __future__ import annotations

import re
from pathlib import Path

from sso_bridge import errors
from sso_bridge.connectors.saml import DEFAULT_ATTRIBUTES
from sso_bridge.settings import SamlConnection, load_settings
from tests.doc_tables import ROW, assert_troubleshooting_table, section

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "saml.md"
EXAMPLE = ROOT / "examples" / "saml-idp.toml"


def test_the_troubleshooting_table_matches_the_reason_codes() -> None:
    assert_troubleshooting_table(DOC, errors.SamlRefused)


def test_the_attribute_table_lists_the_names_the_connector_recognizes() -> None:
    table = {
        field: tuple(re.findall(r"`([^`]+)`", names))
        for field, names, _ in ROW.findall(section(DOC, r"\d+\.\d+ Attributes"))
    }
    assert table == dict(DEFAULT_ATTRIBUTES)


def test_the_example_configuration_loads_with_a_saml_connection() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.base_url.startswith("https://")
    saml = {cid: c for cid, c in settings.connections.items() if c.type == "saml"}
    assert saml, f"{EXAMPLE.name} has no SAML connection"
    for connection in saml.values():
        assert isinstance(connection, SamlConnection)
        assert connection.idp_metadata_url is not None
        assert connection.idp_metadata_url.startswith("https://")
        assert connection.sp_key_file is not None and connection.sp_cert_file is not None
        assert connection.allow_unsolicited
    assert settings.lms.client_id in [client.client_id for client in settings.provider.clients]


def test_the_commented_adfs_attributes_of_the_example_are_valid(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    header = re.search(r"^# (\[connections\.([a-z0-9-]+)\.attributes\])$", text, re.MULTILINE)
    assert header, f"{EXAMPLE.name} has no commented attributes block"
    lines = [header.group(1)]
    for line in text[header.end() :].splitlines()[1:]:
        if not re.match(r"^# [a-z_]+ = ", line):
            break
        lines.append(line.removeprefix("# "))
    assert len(lines) > 1
    uncommented = tmp_path / "adfs.toml"
    uncommented.write_text(text + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    connection = load_settings(uncommented).connections[header.group(2)]
    assert connection.attributes["groups"] == "http://schemas.xmlsoap.org/claims/Group"
    assert len(connection.attributes) == len(lines) - 1
