"""Configuration: sources, precedence, errors that name the key, and the docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sso_bridge.config_doc import DOC, current_section, render
from sso_bridge.settings import ConfigError, load_settings

MINIMAL = 'base_url = "https://sso.example.com"\n'
TOKEN = """
[connections.acme]
type = "token"
issuer = "acme"
keys = [{ kid = "k1", alg = "EdDSA", public_key_file = "k1.pem" }]
"""

MOODLE = """
[lms]
type = "moodle"
api_url = "https://learn.example.com"
api_token = "placeholder"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return info.value.problems


def test_minimal_file_loads_with_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.base_url == "https://sso.example.com"
    assert settings.store.url is None
    assert settings.secure_cookies


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL + '[log]\nlevel = "ERROR"\n')
    monkeypatch.setenv("SSO_BRIDGE_LOG__LEVEL", "DEBUG")
    monkeypatch.setenv("SSO_BRIDGE_LMS__ALLOWED_HOSTS", '["cdn.example.com"]')
    settings = load_settings(path)
    assert settings.log.level == "DEBUG"
    assert settings.lms.allowed_hosts == ["cdn.example.com"]


def test_config_path_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSO_BRIDGE_CONFIG", str(write(tmp_path, MINIMAL)))
    assert load_settings().base_url == "https://sso.example.com"


def test_secrets_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "store__url").write_text("redis://:hunter2@127.0.0.1:6379/0")
    monkeypatch.setenv("SSO_BRIDGE_SECRETS_DIR", str(secrets))
    settings = load_settings(write(tmp_path, MINIMAL))
    assert settings.store.url is not None
    assert settings.store.url.get_secret_value().endswith("6379/0")
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "base_url: Field required"),
        ('base_url = "http://sso.example.com"', "base_url: must be an https URL"),
        (MINIMAL + "[sesion]\nlifetime = 60\n", "sesion: Extra inputs are not permitted"),
        (MINIMAL + "[store]\ntimeout = -1\n", "store.timeout: Input should be greater than 0"),
        (
            MINIMAL + '[connections.Bad_Id]\ntype = "token"\nissuer = "x"\njwks_url = '
            '"https://p.example.com/jwks"\n',
            "connections: Value error, connection id 'Bad_Id'",
        ),
        (MINIMAL + '[connections.acme]\ntype = "saml2"\n', "connections.acme"),
        (
            MINIMAL + '[connections.acme]\ntype = "token"\nissuer = "x"\n',
            "connections.acme: a token connection needs keys, jwks or jwks_url",
        ),
        (
            MINIMAL + TOKEN.replace('alg = "EdDSA"', 'alg = "HS256"'),
            "connections.acme.keys.0: an HS256 key needs secret_file",
        ),
        (MINIMAL + TOKEN.replace('alg = "EdDSA"', 'alg = "none"'), "connections.acme.keys.0.alg"),
        (
            MINIMAL + TOKEN + 'algorithms = ["ES256"]\n',
            "uses EdDSA, which `algorithms` does not allow",
        ),
        (
            MINIMAL + '[[provider.clients]]\nclient_id = "lms"\nclient_secret = "short"\n'
            'redirect_uris = ["https://lms.example.com/cb"]\n',
            "provider.clients.0.client_secret: must be at least 32 characters",
        ),
        (MINIMAL + "this is not toml", "config.toml"),
        (
            MINIMAL + MOODLE + 'moodle_auth = "User Key"\n',
            "lms.moodle_auth: must be the name of a Moodle authentication plugin",
        ),
        (
            MINIMAL + MOODLE + "moodle_cache_ttl = -1\n",
            "lms.moodle_cache_ttl: Input should be greater than or equal to 0",
        ),
        (
            MINIMAL + MOODLE + 'moodle_managed_cohorts = ["staff", " "]\n',
            "lms.moodle_managed_cohorts: a cohort ID number cannot be empty",
        ),
        (
            MINIMAL + MOODLE + 'moodle_managed_cohorts = ["staff", "staff"]\n',
            "lms.moodle_managed_cohorts: a cohort is listed twice",
        ),
        (
            MINIMAL
            + MOODLE
            + 'moodle_managed_cohorts = ["staff"]\n'
            + '[[rules]]\nname = "sales"\ngroups = ["staff", "dept-sales"]\n',
            "rules.0.groups: dept-sales not in lms.moodle_managed_cohorts",
        ),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(write(tmp_path, text))
    assert any(expected.replace("Value error, ", "") in line for line in found), found


def test_moodle_adapter_options_load(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + MOODLE
        + 'moodle_auth = "oauth2"\nmoodle_managed_cohorts = ["staff"]\n'
        + "moodle_create_cohorts = false\nmoodle_cache_ttl = 0\n"
        + '[[rules]]\nname = "all"\ngroups = ["staff"]\n'
    )
    lms = load_settings(write(tmp_path, text)).lms
    assert (lms.moodle_auth, lms.moodle_managed_cohorts) == ("oauth2", ["staff"])
    assert (lms.moodle_create_cohorts, lms.moodle_cache_ttl) == (False, 0)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "[store]\ntimeout = 0\n[log]\nlevel = 'LOUD'\n"))
    keys = {line.split(":")[0] for line in found}
    assert {"base_url", "store.timeout", "log.level"} <= keys


def test_a_secret_value_is_never_echoed(tmp_path: Path) -> None:
    text = (
        MINIMAL + '[[provider.clients]]\nclient_id = "lms"\nclient_secret = "tooshort-secret"\n'
        'redirect_uris = ["https://lms.example.com/cb"]\n'
    )
    assert not any("tooshort-secret" in line for line in problems(write(tmp_path, text)))


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.toml")
    assert "nope.toml" in info.value.problems[0]


def test_configuration_doc_matches_the_model() -> None:
    assert current_section(DOC.read_text()) == render(), (
        "docs/configuration.md is out of date: run `python -m sso_bridge.config_doc --write`"
    )


CLIENT = '[[provider.clients]]\nclient_id = "lms"\nredirect_uris = ["https://learn.example.com/auth/oidc/"]\n'


def test_pkce_is_required_by_default_and_may_be_dropped_by_a_confidential_client(
    tmp_path: Path,
) -> None:
    secret = f'client_secret = "{"s" * 40}"\n'
    default = load_settings(write(tmp_path, MINIMAL + CLIENT + secret))
    assert default.provider.clients[0].require_pkce is True
    relaxed = load_settings(write(tmp_path, MINIMAL + CLIENT + secret + "require_pkce = false\n"))
    assert relaxed.provider.clients[0].require_pkce is False


def test_a_public_client_without_pkce_is_a_configuration_error(tmp_path: Path) -> None:
    assert problems(write(tmp_path, MINIMAL + CLIENT + "require_pkce = false\n")) == [
        "provider.clients.0.require_pkce: may be false only for a confidential client: set "
        "client_secret, or keep require_pkce = true (a public client has nothing but PKCE to "
        "prove the code is its own)"
    ]


def test_a_bad_secret_is_the_one_error_shown_for_a_client_without_pkce(tmp_path: Path) -> None:
    text = MINIMAL + CLIENT + 'client_secret = "short"\nrequire_pkce = false\n'
    assert problems(write(tmp_path, text)) == [
        "provider.clients.0.client_secret: must be at least 32 characters"
    ]
