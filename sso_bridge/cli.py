"""The `sso-bridge` command: serve, demo, check, certs, connections, token, users, audit."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .settings import ConfigError, Settings, load_settings

EXIT_CONFIG = 2
REGISTERED_CLAIMS = frozenset({"iss", "aud", "sub", "iat", "exp", "nbf", "jti"})


def _settings(ctx: click.Context) -> Settings:
    """Load the configuration once per invocation; a bad one stops with every problem listed."""
    if "settings" not in ctx.obj:
        try:
            ctx.obj["settings"] = load_settings(ctx.obj.get("config"))
        except ConfigError as exc:
            click.echo(f"sso-bridge: {exc}", err=True)
            ctx.exit(EXIT_CONFIG)
    return ctx.obj["settings"]  # type: ignore[no-any-return]


def _emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text(data))


@click.group()
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML configuration file (default: $SSO_BRIDGE_CONFIG).",
)
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """sso-bridge: single sign-on from an HR/ERP portal into a learning platform."""
    from . import logs

    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    # Commands print their results on stdout (often as --json): their log lines go to
    # stderr. `serve` and `demo` configure logging again from the settings.
    logs.configure("WARNING", "console", sys.stderr)


# -- serve and demo --------------------------------------------------------------------------


@main.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.pass_context
def serve(ctx: click.Context, bind: str, workers: int) -> None:
    """Run the bridge under gunicorn."""
    from .serve import run

    settings = _settings(ctx)
    try:
        run(settings, bind, workers)
    except ConfigError as exc:
        click.echo(f"sso-bridge: {exc}", err=True)
        ctx.exit(EXIT_CONFIG)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--var-dir", default="var/demo", show_default=True, type=click.Path(path_type=Path))
def demo(host: str, port: int, var_dir: Path) -> None:
    """Run the portal, the bridge and a demo LMS in one process on embedded defaults."""
    from .demo import run

    run(host=host, port=port, var_dir=var_dir)


# -- check -----------------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def check(ctx: click.Context, as_json: bool) -> None:
    """Validate the configuration, keys and certificates, and reach the database and store."""
    from .checks import run_checks

    try:
        settings = load_settings(ctx.obj.get("config"))
    except ConfigError as exc:
        results = [{"check": "configuration", "ok": False, "problem": p} for p in exc.problems]
    else:
        results = run_checks(settings)
    _emit(
        results,
        as_json,
        lambda rows: "\n".join(_check_line(r) for r in rows),
    )
    ctx.exit(0 if all(r["ok"] for r in results) else 1)


def _check_line(row: dict[str, Any]) -> str:
    if not row["ok"]:
        return f"FAIL {row['check']}: {row['problem']}"
    if row.get("warning"):
        return f"WARN {row['check']}: {row['warning']}"
    return f"ok   {row['check']}"


# -- certs -----------------------------------------------------------------------------------


@main.group()
def certs() -> None:
    """Make keys: the provider's ID-token signing keys, and test keys for portals."""


@certs.command("generate")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--type", "kind", type=click.Choice(["rsa", "ec", "ed25519"]), default="rsa", show_default=True
)
@click.option(
    "--public-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the public key here (PEM).",
)
@click.option(
    "--cert-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a self-signed certificate here (PEM), as SAML metadata needs.",
)
@click.option("--cn", default="sso-bridge", show_default=True, help="Certificate common name.")
@click.option("--days", default=730, show_default=True, type=click.IntRange(1, 3650))
def certs_generate(
    out: Path, kind: str, public_out: Path | None, cert_out: Path | None, cn: str, days: int
) -> None:
    """Write a new private key to OUT (mode 0600); refuses to overwrite."""
    from .keyfiles import generate_private_key, write_private_key, write_public_key

    for path in (out, cert_out):
        if path is not None and path.exists():
            raise click.ClickException(f"{path} exists; refusing to overwrite a key")
    key = generate_private_key(kind)
    write_private_key(out, key)
    click.echo(f"wrote {out}")
    if public_out is not None:
        write_public_key(public_out, key.public_key())
        click.echo(f"wrote {public_out}")
    if cert_out is not None:
        from .keyfiles import self_signed_certificate

        cert_out.write_bytes(self_signed_certificate(key, cn, days))
        click.echo(f"wrote {cert_out}")


@certs.command("rotate")
@click.option("--connection", "connection_id", required=True, help="A SAML connection id.")
@click.option(
    "--dir",
    "directory",
    default="certs",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--days", default=730, show_default=True, type=click.IntRange(1, 3650))
@click.pass_context
def certs_rotate(ctx: click.Context, connection_id: str, directory: Path, days: int) -> None:
    """Make the next SP key and certificate of a SAML connection, and say how to roll over."""
    from datetime import UTC, datetime

    from .keyfiles import generate_private_key, self_signed_certificate, write_private_key

    settings = _settings(ctx)
    connection = settings.connections.get(connection_id)
    if connection is None or connection.type != "saml":
        raise click.ClickException(f"no SAML connection {connection_id!r} in the configuration")
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    key_file = directory / f"{connection_id}-sp-{stamp}.key"
    cert_file = directory / f"{connection_id}-sp-{stamp}.crt"
    for path in (key_file, cert_file):
        if path.exists():
            raise click.ClickException(f"{path} exists; refusing to overwrite a key")
    key = generate_private_key("rsa")
    write_private_key(key_file, key)
    # A common name is at most 64 characters; the certificate is trusted by its bytes anyway.
    common_name = f"sso-bridge SP {connection_id}"[:64]
    cert_file.write_bytes(self_signed_certificate(key, common_name, days))
    metadata = f"{settings.base_url}/saml/{connection_id}/metadata"
    click.echo(f"""wrote {key_file}
wrote {cert_file}

1. Now: publish the next certificate in the SP metadata ({metadata}):

   [connections.{connection_id}]
   sp_next_cert_file = "{cert_file}"

2. Once every IdP has re-read that metadata: sign and decrypt with the new key:

   sp_key_file = "{key_file}"
   sp_cert_file = "{cert_file}"

   and remove sp_next_cert_file. Keep the old key file until the switch is done
   on every instance.""")


# -- connections -----------------------------------------------------------------------------


@main.group()
def connections() -> None:
    """Upstream connections."""


@connections.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def connections_list(ctx: click.Context, as_json: bool) -> None:
    """List configured connections and their endpoints."""
    settings = _settings(ctx)
    rows = [
        {
            "id": cid,
            "type": c.type,
            "name": c.display_name or cid,
            # What the upstream admin needs: where tokens go, the SP's metadata URL, or
            # the redirect URI to register at the provider.
            "endpoint": {
                "token": f"{settings.base_url}/token/{cid}",
                "saml": f"{settings.base_url}/saml/{cid}/metadata",
            }.get(c.type, f"{settings.base_url}/oidc/{cid}/callback"),
        }
        for cid, c in settings.connections.items()
    ]
    _emit(
        rows,
        as_json,
        lambda rs: (
            "\n".join(f"{r['id']:<24} {r['type']:<6} {r['endpoint']}" for r in rs)
            or "no connections"
        ),
    )


@connections.command("import-metadata")
@click.argument("source")
@click.option("--id", "connection_id", required=True, help="The new connection's id (a slug).")
@click.option("--entity-id", default=None, help="The IdP to take from an aggregate.")
@click.option("--json", "as_json", is_flag=True)
def connections_import_metadata(
    source: str, connection_id: str, entity_id: str | None, as_json: bool
) -> None:
    """Check an IdP's metadata (URL or file) and print a ready [connections.<id>] block."""
    from .connectors.saml_metadata import describe_idp_metadata

    try:
        summary = describe_idp_metadata(source, connection_id, entity_id)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _emit(summary, as_json, lambda s: s["summary"] + "\n\n" + s["toml"])


# -- token -----------------------------------------------------------------------------------


@main.group()
def token() -> None:
    """Mint and verify handoff tokens (for portal developers)."""


@token.command("mint")
@click.option("--connection", "connection_id", required=True, help="Connection id.")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="PEM private key (Ed25519, EC P-256, RSA) or a file with an HS256 secret.",
)
@click.option("--kid", required=True)
@click.option("--sub", required=True, help="The employee's stable id.")
@click.option(
    "--claim",
    "claims",
    multiple=True,
    metavar="NAME=VALUE",
    help="A profile claim; repeat. `groups` takes a comma-separated list.",
)
@click.option("--next", "next_path", default=None, help="Deep link, e.g. /courses/safety-101.")
@click.option("--lifetime", default=60, show_default=True, type=int)
@click.pass_context
def token_mint(
    ctx: click.Context,
    connection_id: str,
    key_file: Path,
    kid: str,
    sub: str,
    claims: tuple[str, ...],
    next_path: str | None,
    lifetime: int,
) -> None:
    """Print a handoff token for CONNECTION, signed with KEY, as the portal would mint it."""
    from .keyfiles import mint_handoff_token

    settings = _settings(ctx)
    connection = settings.connections.get(connection_id)
    if connection is None or connection.type != "token":
        raise click.ClickException(f"no token connection {connection_id!r} in the configuration")
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": connection.issuer,
        "aud": f"{settings.base_url}/token/{connection_id}",
        "sub": sub,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
    }
    for item in claims:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--claim")
        if name in REGISTERED_CLAIMS:
            raise click.BadParameter(
                f"{name} is set by the command itself (use --sub, --lifetime)",
                param_hint="--claim",
            )
        payload[name] = [g for g in value.split(",") if g] if name == "groups" else value
    if next_path:
        payload["next"] = next_path
    click.echo(mint_handoff_token(key_file, kid, payload))


@token.command("verify")
@click.option("--connection", "connection_id", required=True)
@click.argument("token_value", metavar="TOKEN", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_verify(
    ctx: click.Context, connection_id: str, token_value: str | None, as_json: bool
) -> None:
    """Check TOKEN (or standard input) as POST /token/<id> checks it, without using it up.

    Every check of the token and its attributes runs, with the connection's keys;
    the replay check uses a store private to this command, so verifying never
    consumes the jti. The `next` allow-list and provisioning are not part of it.
    """
    from .connectors.token import TokenConnector
    from .errors import BridgeError
    from .state import MemoryStore

    settings = _settings(ctx)
    connection = settings.connections.get(connection_id)
    if connection is None or connection.type != "token":
        raise click.ClickException(f"no token connection {connection_id!r} in the configuration")
    value = (token_value or sys.stdin.read()).strip()
    connector = TokenConnector(
        connection_id, connection, settings.base_url, MemoryStore(), settings.limits.max_token_bytes
    )
    try:
        verified = connector.complete({"token": value})
    except BridgeError as exc:
        result = {"valid": False, "reason": exc.code, "detail": exc.detail}
        _emit(result, as_json, lambda r: f"INVALID {r['reason']}: {r['detail']}")
        ctx.exit(1)
    identity = verified.identity
    result = {
        "valid": True,
        "subject": identity.subject,
        "identity": identity.profile(),
        "active": identity.active,
        "next": verified.next,
    }
    _emit(
        result,
        as_json,
        lambda r: f"VALID for subject {r['subject']}\n" + json.dumps(r["identity"], indent=2),
    )


# -- rules -----------------------------------------------------------------------------------


@main.group()
def rules() -> None:
    """Group and course rules."""


@rules.command("explain")
@click.option("--user", "user_ref", default=None, help="A user: id, public id or e-mail.")
@click.option(
    "--profile",
    "profile_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON profile (identity fields) instead of a stored user.",
)
@click.option("--connection", default="", help="The connection a --profile comes through.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def rules_explain(
    ctx: click.Context,
    user_ref: str | None,
    profile_file: Path | None,
    connection: str,
    as_json: bool,
) -> None:
    """Which rules fire for a person, why, and what would change in the LMS (nothing is applied)."""
    from .admin_queries import open_services, show_user
    from .rules import evaluate, facts

    if (user_ref is None) == (profile_file is None):
        raise click.UsageError("give exactly one of --user and --profile")
    settings = _settings(ctx)
    if profile_file is not None:
        try:
            profile = json.loads(profile_file.read_text())
        except ValueError as exc:
            raise click.ClickException(f"{profile_file}: not JSON ({exc})") from None
        desired = evaluate(settings.rules, facts(profile, connection))
        changes: list[str] = []
    else:
        row = show_user(settings, user_ref or "")
        if row is None:
            raise click.ClickException(f"no user {user_ref!r}")
        via = row["links"][0].split(":", 1)[0] if row["links"] else ""
        with open_services(settings) as svc:
            desired, changes = svc.provisioner.plan(row["id"], facts(row, via))
    result = {
        "rules": [
            {
                "name": o.name,
                "fired": o.fired,
                "reasons": list(o.reasons),
                "groups": list(o.groups),
                "courses": list(o.courses),
            }
            for o in desired.outcomes
        ],
        "groups": sorted(desired.groups),
        "courses": sorted(desired.courses),
        "changes": changes,
    }

    def text(r: dict[str, Any]) -> str:
        lines = []
        for rule in r["rules"]:
            lines.append(f"{'FIRES' if rule['fired'] else 'no   '} {rule['name']}")
            lines += [f"        {reason}" for reason in rule["reasons"]]
        lines.append(f"groups:  {', '.join(r['groups']) or '-'}")
        lines.append(f"courses: {', '.join(r['courses']) or '-'}")
        lines += [f"change:  {c}" for c in r["changes"]]
        return "\n".join(lines)

    _emit(result, as_json, text)


# -- users and audit -------------------------------------------------------------------------


@main.group()
def users() -> None:
    """People the bridge has provisioned."""


@users.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", default=100, show_default=True, type=int)
@click.pass_context
def users_list(ctx: click.Context, as_json: bool, limit: int) -> None:
    """List users, newest first."""
    from .admin_queries import list_users

    rows = list_users(_settings(ctx), limit)
    _emit(
        rows,
        as_json,
        lambda rs: (
            "\n".join(
                f"{r['id']:>6} {r['email'] or '-':<32} {r['display_name'] or '-':<28} "
                f"{'BLOCKED' if r['blocked'] else r['employment_status'] or 'active'}"
                for r in rs
            )
            or "no users"
        ),
    )


@users.command("show")
@click.argument("user_ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def users_show(ctx: click.Context, user_ref: str, as_json: bool) -> None:
    """Show one user (by id, public id or e-mail) with their identity links."""
    from .admin_queries import show_user

    row = show_user(_settings(ctx), user_ref)
    if row is None:
        raise click.ClickException(f"no user {user_ref!r}")
    _emit(row, as_json, lambda r: "\n".join(f"{k:<18} {v}" for k, v in r.items()))


@main.group()
def audit() -> None:
    """Audit events."""


@audit.command("tail")
@click.option("-n", "limit", default=20, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit_tail(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Show the newest audit events."""
    from .admin_queries import open_services

    with open_services(_settings(ctx)) as svc:
        rows = svc.audit.tail(limit)
    _emit(
        rows,
        as_json,
        lambda rs: (
            "\n".join(
                f"{r['at']} {r['correlation_id']} {r['event']:<8} {r['outcome']:<8} {r['reason']:<24} "
                f"{r['connection'] or '-'} {r['subject'] or '-'}"
                for r in rs
            )
            or "no events"
        ),
    )


# -- db --------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The durable store."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply database migrations and sync the provider's clients from the configuration."""
    from .admin_queries import open_services
    from .provider import sync_clients

    settings = _settings(ctx)
    with open_services(settings) as svc:
        svc.db.upgrade()
        sync_clients(svc.db, settings)
    click.echo("database is up to date")


if __name__ == "__main__":  # pragma: no cover
    main()
