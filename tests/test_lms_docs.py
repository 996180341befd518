"""docs/lms.md and the LMS examples stay true to the code.

The conditions table of docs/lms.md describes every rule condition the settings accept
(the `when` fields and rule keys such as `hired_within_days`);
the Moodle functions table lists exactly the web-service functions the Moodle adapter
calls (read from its source), so the service an admin builds from it is complete; the
troubleshooting table covers every LMS reason code with its status; and both example
configurations load with the adapter they are about.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import get_args

import pytest

from sso_bridge.checks import moodle_oidc_client
from sso_bridge.handoff import OIDC_LOGIN_PATH
from sso_bridge.lms import base, moodle
from sso_bridge.settings import RuleField, RuleSettings, load_settings
from tests.doc_tables import ROW, first_column, reason_codes, section

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "lms.md"
MOODLE_EXAMPLE = ROOT / "examples" / "moodle.toml"
SCIM_EXAMPLE = ROOT / "examples" / "scim-lms.toml"
MOODLE_SOURCE = Path(inspect.getfile(moodle))

# Moodle's web-service functions are named component_area_action: core_user_create_users.
WS_FUNCTION = re.compile(r"^(?:core|enrol|auth|tool|local|mod|block)_[a-z0-9]+(?:_[a-z0-9]+)+$")
# The adapter's methods that take the web-service function name as their first argument.
CALLERS = {"_call", "_update_user", "_unexpected"}


def moodle_functions() -> set[str]:
    """Every web-service function name the Moodle adapter sends: the string literals passed
    as the function to its REST helpers, and any other literal shaped like one."""
    tree = ast.parse(MOODLE_SOURCE.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in CALLERS
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and WS_FUNCTION.match(node.value)
        ):
            found.add(node.value)
    return found


def test_the_source_scan_finds_the_adapters_functions() -> None:
    functions = moodle_functions()
    # A scan that finds nothing would make the next tests pass vacuously.
    assert {
        "core_user_get_users_by_field",
        "core_user_create_users",
        "core_user_update_users",
        "enrol_manual_enrol_users",
        "auth_userkey_request_login_url",
    } <= functions
    assert all(WS_FUNCTION.match(name) for name in functions), functions


def test_every_function_the_moodle_adapter_sends_is_in_the_doc() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = sorted(name for name in moodle_functions() if f"`{name}`" not in text)
    assert missing == [], f"functions the Moodle adapter calls but {DOC.name} does not name"


def test_the_moodle_functions_table_lists_exactly_what_the_adapter_calls() -> None:
    table = first_column(section(DOC, r"2\.1 Web services, the integration user and the token"))
    listed = [name for name in table if WS_FUNCTION.match(name)]
    assert len(listed) == len(set(listed)), "a function is listed twice"
    assert sorted(listed) == sorted(moodle_functions())


def test_every_rule_condition_is_in_the_conditions_table() -> None:
    # The `when` fields, and the rule's own keys that narrow who it applies to
    # (hired_within_days): everything but its name and what it grants.
    rule_keys = set(RuleSettings.model_fields) - {"name", "when", "groups", "courses"}
    table = first_column(section(DOC, r"5\.1 Conditions"))
    assert len(table) == len(set(table)), "a condition is listed twice"
    assert sorted(table) == sorted({*get_args(RuleField), *rule_keys})


def test_the_troubleshooting_table_covers_every_lms_reason_code() -> None:
    known = {code: str(status) for code, status in reason_codes(base, base.LmsError).items()}
    troubleshooting = section(DOC, r"\d+\. Troubleshooting")
    # A rule naming what the LMS lacks, or a membership an LMS admin holds, refuses nobody
    # (the grant is skipped): each has its own paragraph, not a row with a status.
    for never_refused in (base.LmsTargetMissing, base.LmsMembershipHeld):
        assert known.pop(never_refused.code)
        assert f"`{never_refused.code}`" in troubleshooting, never_refused.code
    # A code may have several rows here, one per cause (a timeout, a refused connection…).
    rows = ROW.findall(troubleshooting)
    assert {code for code, _, _ in rows} == set(known)
    wrong = sorted({code for code, status, _ in rows if status.strip() != known[code]})
    assert wrong == [], "statuses in the table differ from sso_bridge/lms/base.py"


def test_the_moodle_example_loads_with_the_moodle_adapter() -> None:
    settings = load_settings(MOODLE_EXAMPLE)
    lms = settings.lms
    assert lms.type == "moodle"
    assert lms.api_url is not None and lms.api_url.startswith("https://")
    assert lms.api_token is not None
    assert lms.moodle_login == "userkey"
    assert settings.provider.signing_key_files
    assert settings.connections
    # The rules the page walks through: department -> cohort, location -> course, and an
    # onboarding course for everyone.
    conditions = {field for rule in settings.rules for field in rule.when}
    assert {"department", "location"} <= conditions
    assert any(not rule.when and rule.courses for rule in settings.rules)


def test_the_scim_example_loads_with_the_scim_adapter() -> None:
    settings = load_settings(SCIM_EXAMPLE)
    lms = settings.lms
    assert lms.type == "scim"
    assert lms.api_url is not None and lms.api_url.startswith("https://")
    assert lms.api_token is not None or (lms.api_username and lms.api_password)
    assert settings.provider.signing_key_files
    # People sign in through the bridge's OpenID Provider: the LMS is one of its clients.
    assert lms.client_id in [client.client_id for client in settings.provider.clients]
    # SCIM has no courses: a rule granting one would fail `sso-bridge check`.
    assert settings.rules
    assert all(not rule.courses for rule in settings.rules)


@pytest.mark.parametrize("example", [MOODLE_EXAMPLE, SCIM_EXAMPLE], ids=lambda p: p.name)
def test_examples_keep_no_real_credentials(example: Path) -> None:
    settings = load_settings(example)
    token = settings.lms.api_token
    assert token is None or token.get_secret_value().startswith("placeholder-")


def test_the_moodle_oidc_configuration_in_the_doc_loads_and_passes_the_check(
    tmp_path: Path,
) -> None:
    # Read up to section 3 by hand: `section` would stop at the block's `# comment` lines.
    doc = DOC.read_text(encoding="utf-8")
    text = doc[doc.index("### 2.4 Signing in") : doc.index("## 3. A SCIM-capable LMS")]
    [block] = re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
    # The token comes from the environment or a secrets file (section 2.1).
    block = block.replace('moodle_login = "oidc"\n', 'moodle_login = "oidc"\napi_token = "t"\n')
    path = tmp_path / "moodle-oidc.toml"
    path.write_text('base_url = "https://sso.example.com"\n' + block)
    settings = load_settings(path)
    [client] = settings.provider.clients
    assert (settings.lms.moodle_login, settings.lms.client_id) == ("oidc", client.client_id)
    assert client.require_pkce is False and client.client_secret is not None
    assert client.redirect_uris == [f"{settings.lms.base_url}{OIDC_LOGIN_PATH}"]
    assert moodle_oidc_client(settings) is None
