"""Demo code, not part of the product: portal, bridge and LMS in one process (`sso-bridge demo`).

The bridge is the real one, built by ``create_app`` from settings made here; the
"Acme HR" portal and the "Demo LMS" around it are small stand-ins that talk to it
only through its public contract (a signed token in, OpenID Connect out).
Everything runs on embedded defaults: SQLite and the in-process state store.
"""

from __future__ import annotations

import os
from pathlib import Path

from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import run_simple

from .. import create_app
from ..provider import sync_clients
from ..settings import load_settings
from .keys import ensure_keys
from .lms import LmsConfig, create_lms_app
from .portal import DEMO_EMPLOYEES, PortalConfig, create_portal_app

CONNECTION_ID = "acme-hr"
PORTAL_ISSUER = "acme-hr-portal"
PORTAL_KID = "demo-portal-1"
LMS_CLIENT_ID = "demo-lms"


DEMO_CONFIG = """\
# Written by `sso-bridge demo` on every start; demo only.
base_url = "{base_url}"
var_dir = "{var_dir}"

[database]
url = "sqlite:///{var_dir}/sso-bridge.db"

[log]
format = "console"

[lms]
type = "builtin"
base_url = "{base_url}/lms"
client_id = "{client_id}"

[provider]
signing_key_files = ["{provider_key}"]

[[provider.clients]]
client_id = "{client_id}"
client_secret = "{client_secret}"
redirect_uris = ["{base_url}/lms/callback"]
initiate_login_uri = "{base_url}/lms/login"

# Rules: cohorts and courses from HR attributes, applied on every login.
[[rules]]
name = "everyone: safety first"
courses = ["safety-101"]

[[rules]]
name = "engineering cohort"
when = {{ department = ["Engineering"] }}
groups = ["cohort-engineering"]
courses = ["gdpr-basics"]

[[rules]]
name = "London office"
when = {{ location = ["London"] }}
groups = ["site-london"]

[[rules]]
name = "people managers"
when = {{ job_title = ["*"], groups = ["managers"] }}
courses = ["leadership"]

[connections.{connection_id}]
type = "token"
display_name = "Acme HR"
issuer = "{issuer}"
portal_url = "{base_url}/portal/"
keys = [{{ kid = "{kid}", alg = "EdDSA", public_key_file = "{portal_key}" }}]
"""


def build_demo_app(
    host: str = "127.0.0.1",
    port: int = 8000,
    var_dir: Path = Path("var/demo"),
    extra_config: str = "",
) -> DispatcherMiddleware:
    """The demo's WSGI app: the bridge at /, the portal at /portal, the LMS at /lms.

    Serve it threaded: the LMS calls the bridge's discovery, token and userinfo
    endpoints over HTTP from inside a request to this same server. ``extra_config`` is
    TOML appended to the demo's configuration (further connections, for example).
    """
    base_url = f"http://{host}:{port}"
    keys = ensure_keys(var_dir)
    # The demo's bridge configuration is an ordinary config file, so the command line
    # works on the demo too: `sso-bridge --config var/demo/demo.toml audit tail`.
    config = var_dir / "demo.toml"
    text = DEMO_CONFIG.format(
        base_url=base_url,
        var_dir=var_dir.resolve(),
        provider_key=keys.provider_key_file.resolve(),
        portal_key=keys.portal_public_key_file.resolve(),
        client_id=LMS_CLIENT_ID,
        connection_id=CONNECTION_ID,
        issuer=PORTAL_ISSUER,
        kid=PORTAL_KID,
        client_secret=keys.lms_client_secret,
    )
    # More connections (the SAML flow tests add one for their IdP) go after the demo's own.
    text += extra_config
    # Created owner-only from the start: it holds the demo LMS's client secret.
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    settings = load_settings(config)
    bridge = create_app(settings)
    services = bridge.extensions["sso_bridge"]
    # create_app touches no database: migrations and the client registry are brought up
    # to date when a server starts, before it serves (database.migrate_on_start).
    if settings.database.migrate_on_start:
        services.db.upgrade()
    sync_clients(services.db, settings)

    portal = create_portal_app(
        PortalConfig(
            bridge_url=base_url,
            connection_id=CONNECTION_ID,
            issuer=PORTAL_ISSUER,
            kid=PORTAL_KID,
            private_key_pem=keys.portal_private_pem,
            secret_key=keys.portal_flask_secret,
            base_url=f"{base_url}/portal",
        )
    )
    lms = create_lms_app(
        LmsConfig(
            base_url=f"{base_url}/lms",
            issuer=base_url,
            client_id=LMS_CLIENT_ID,
            client_secret=keys.lms_client_secret,
            secret_key=keys.lms_flask_secret,
        )
    )
    return DispatcherMiddleware(bridge, {"/portal": portal, "/lms": lms})


def run(host: str = "127.0.0.1", port: int = 8000, var_dir: Path = Path("var/demo")) -> None:
    """Build the demo, print where to start, and serve until interrupted."""
    app = build_demo_app(host, port, var_dir)
    print(f"\n  Open the demo portal:  http://{host}:{port}/portal/\n")
    print("  Demo employees (switch with 'Signed in as' at the top of the portal):")
    for person in DEMO_EMPLOYEES.values():
        print(f"    {person.name:<16} {person.employee_id}  {person.employment_status}")
    print()
    run_simple(host, port, app, threaded=True)
