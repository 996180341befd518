"""The copy-paste minting snippets in docs/snippets/ produce tokens the bridge accepts.

Each runnable snippet is run as a portal would run it, with a fresh key the connection
trusts. Its token is first checked by the TokenConnector, so a failure names the exact
reason code, and then posted to the real app, which must provision the person and
redirect into the LMS. Python and Node.js always run; PHP and Java are skipped, with the
reason, only where their binaries are missing. The C# snippet is not run (no .NET here).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from sso_bridge import errors
from sso_bridge.connectors.token import TokenConnector
from sso_bridge.keyfiles import generate_private_key, write_private_key, write_public_key
from sso_bridge.models import IdentityLink, User
from sso_bridge.settings import Settings, load_settings
from sso_bridge.state import MemoryStore

from .conftest import BASE_URL, LMS_URL, Keys, build_app, settings_dict

ROOT = Path(__file__).resolve().parent.parent
SNIPPETS = ROOT / "docs" / "snippets"
DOC = ROOT / "docs" / "token-handoff.md"
EXAMPLE = ROOT / "examples" / "token-portal.toml"

CONNECTION = "intranet"
ISSUER = "acme-intranet"
AUDIENCE = f"{BASE_URL}/token/{CONNECTION}"
SUBJECT = "E2042"
PROFILE = {
    "HANDOFF_EMAIL": "grace.hopper@acme.example",
    "HANDOFF_GIVEN_NAME": "Grace",
    "HANDOFF_FAMILY_NAME": "Hopper",
    "HANDOFF_GROUPS": "staff, engineering",
    "HANDOFF_NEXT": "/courses/safety-101",
}
ALGORITHMS = {"ed25519": "EdDSA", "ec": "ES256", "rsa": "RS256"}
RUN_TIMEOUT = 120


@dataclass(frozen=True)
class Snippet:
    """One snippet: how to run it, and which binaries it needs (None: always runs)."""

    file: str
    command: Callable[[Path], list[str]]
    needs: tuple[str, ...] | None = None


def _python(_work: Path) -> list[str]:
    return [sys.executable, str(SNIPPETS / "mint_token.py")]


def _node(_work: Path) -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the Node.js snippet must run in this suite")
    return [node, str(SNIPPETS / "mint_token.js")]


def _php(_work: Path) -> list[str]:
    php = shutil.which("php")
    assert php is not None
    probe = subprocess.run(
        [php, "-r", 'exit(extension_loaded("openssl") ? 0 : 1);'],
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("php is installed without the openssl extension the PHP snippet needs")
    return [php, str(SNIPPETS / "MintToken.php")]


def _java(work: Path) -> list[str]:
    javac, java = shutil.which("javac"), shutil.which("java")
    assert javac is not None and java is not None
    classes = work / "classes"
    compiled = subprocess.run(
        [javac, "-d", str(classes), str(SNIPPETS / "MintToken.java")],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert compiled.returncode == 0, f"javac MintToken.java failed:\n{compiled.stderr}"
    return [java, "-cp", str(classes), "MintToken"]


SNIPPET = {
    "python": Snippet("mint_token.py", _python),
    "node": Snippet("mint_token.js", _node),
    "php": Snippet("MintToken.php", _php, needs=("php",)),
    "java": Snippet("MintToken.java", _java, needs=("java", "javac")),
}

CASES = [
    ("python", "ed25519"),
    ("python", "ec"),
    ("python", "rsa"),
    ("node", "ed25519"),
    ("node", "ec"),
    ("node", "rsa"),
    ("php", "ec"),
    ("java", "ed25519"),
]


def _b64json(segment: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return data


def _run(command: list[str], args: list[str], env: dict[str, str]) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    done = subprocess.run(
        command + args,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (
        f"{' '.join(command)} exited {done.returncode}\nstdout:\n{done.stdout}\n"
        f"stderr:\n{done.stderr}"
    )
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one line (the token) on stdout, got:\n{done.stdout}"
    return lines[0]


def _settings(keys: Keys, tmp_path: Path, kid: str, alg: str, public: Path) -> Settings:
    connection = {
        "type": "token",
        "display_name": "Acme Intranet",
        "issuer": ISSUER,
        "keys": [{"kid": kid, "alg": alg, "public_key_file": public}],
        "required_attributes": ["email", "given_name", "family_name"],
    }
    return Settings(**settings_dict(keys, tmp_path, connections={CONNECTION: connection}))


def _connector(settings: Settings) -> TokenConnector:
    return TokenConnector(
        CONNECTION,
        settings.connections[CONNECTION],
        settings.base_url,
        MemoryStore(),
        settings.limits.max_token_bytes,
    )


def _verify(settings: Settings, token: str, what: str) -> dict[str, Any]:
    """The token's claims, or a failure naming the bridge's reason code and detail."""
    try:
        return _connector(settings).verify(token)
    except errors.BridgeError as exc:
        parts = token.split(".")
        header = _b64json(parts[0]) if len(parts) == 3 else "?"
        pytest.fail(
            f"{what}: the bridge refuses the token with {exc.code}: {exc.detail} (header {header})"
        )


@pytest.mark.parametrize(("language", "key_type"), CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_snippet_token_signs_a_person_in(
    keys: Keys, tmp_path: Path, language: str, key_type: str
) -> None:
    snippet = SNIPPET[language]
    missing = [b for b in snippet.needs or () if shutil.which(b) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: {snippet.file} cannot run here")
    command = snippet.command(tmp_path)

    private, public = tmp_path / "portal.pem", tmp_path / "portal.pub.pem"
    key = generate_private_key(key_type)
    write_private_key(private, key)
    write_public_key(public, key.public_key())
    kid, alg = f"{language}-2026-11", ALGORITHMS[key_type]
    settings = _settings(keys, tmp_path, kid, alg, public)

    # Inputs as arguments, profile claims from the environment ...
    token = _run(command, [str(private), kid, AUDIENCE, ISSUER, SUBJECT], PROFILE)
    # ... and everything from the environment.
    from_env = _run(
        command,
        [],
        {
            **PROFILE,
            "HANDOFF_PRIVATE_KEY": str(private),
            "HANDOFF_KID": kid,
            "HANDOFF_AUDIENCE": AUDIENCE,
            "HANDOFF_ISSUER": ISSUER,
            "HANDOFF_SUBJECT": SUBJECT,
        },
    )

    header = _b64json(token.split(".")[0])
    assert header == {"alg": alg, "typ": "handoff+jwt", "kid": kid}
    claims = _verify(settings, token, snippet.file)
    env_claims = _verify(settings, from_env, f"{snippet.file} (inputs from the environment)")
    assert claims["jti"] != env_claims["jti"], "every token needs a fresh jti"
    assert claims["exp"] - claims["iat"] <= settings.connections[CONNECTION].max_lifetime
    assert {
        k: claims[k]
        for k in ("iss", "aud", "sub", "email", "given_name", "family_name", "groups", "next")
    } == {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": SUBJECT,
        "email": "grace.hopper@acme.example",
        "given_name": "Grace",
        "family_name": "Hopper",
        "groups": ["staff", "engineering"],
        "next": "/courses/safety-101",
    }

    app = build_app(settings)
    try:
        client = app.test_client()
        response = client.post(f"/token/{CONNECTION}", data={"token": token})
        assert response.status_code == 303, response.get_data(as_text=True)
        query = parse_qs(urlsplit(response.headers["Location"]).query)
        # The signed `next` claim is the deep link the person lands on.
        assert query["target_link_uri"] == [f"{LMS_URL}/courses/safety-101"]

        with app.extensions["sso_bridge"].db.session() as session:
            user = session.scalars(
                select(User).where(User.email == "grace.hopper@acme.example")
            ).one()
            assert (user.given_name, user.family_name, sorted(user.groups)) == (
                "Grace",
                "Hopper",
                ["engineering", "staff"],
            )
            link = session.scalars(
                select(IdentityLink).where(
                    IdentityLink.connection == CONNECTION, IdentityLink.subject == SUBJECT
                )
            ).one()
            assert link.user_id == user.id

        replay = client.post(f"/token/{CONNECTION}", data={"token": token})
        assert replay.status_code == 400
        assert "token_replayed" in replay.get_data(as_text=True)
        again = client.post(f"/token/{CONNECTION}", data={"token": from_env})
        assert again.status_code == 303, again.get_data(as_text=True)
    finally:
        app.extensions["sso_bridge"].close()


def test_snippets_refuse_to_run_without_inputs(tmp_path: Path) -> None:
    for language in ("python", "node"):
        command = SNIPPET[language].command(tmp_path)
        base = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
        done = subprocess.run(
            command, env=base, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
        )
        assert done.returncode == 2, language
        assert done.stdout == "", language
        assert "HANDOFF_PRIVATE_KEY" in done.stderr, language


# -- the spec and the example stay in step with the code -------------------------------


def test_every_refusal_code_is_documented() -> None:
    # Every code in sso_bridge/errors.py (the provider's own errors live elsewhere, the
    # SAML ones in docs/saml.md), except
    # assertion_invalid, only a base class, and login_required, raised on the LMS side.
    # The SAML and OIDC codes are documented in docs/saml.md and docs/oidc.md.
    codes = {
        value.code
        for value in vars(errors).values()
        if isinstance(value, type)
        and issubclass(value, errors.BridgeError)
        and not issubclass(value, errors.SamlRefused | errors.OidcRefused)
    } | {"internal_error"}
    codes -= {"assertion_invalid", "login_required"}
    section = DOC.read_text().split("## 6. Reason codes", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))
    assert sorted(codes - documented) == [], "codes missing from docs/token-handoff.md"
    assert sorted(documented - codes) == [], "docs/token-handoff.md lists unknown codes"


def test_every_snippet_is_named_in_the_spec() -> None:
    text = DOC.read_text()
    for path in sorted(SNIPPETS.iterdir()):
        assert f"snippets/{path.name}" in text, path.name


def test_example_configuration_loads() -> None:
    settings = load_settings(EXAMPLE)
    connection = settings.connections["intranet"]
    assert connection.type == "token"
    assert [key.kid for key in connection.keys] == ["intranet-2026-11", "intranet-2026-05"]
    assert all(key.alg in connection.algorithms for key in connection.keys)
    assert settings.base_url.startswith("https://")
    assert settings.lms.client_id in [client.client_id for client in settings.provider.clients]
