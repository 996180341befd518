"""The objects one bridge process is made of, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from .audit import Auditor
from .connectors.base import Connector
from .connectors.oidc import OidcConnector
from .connectors.saml import SamlConnector
from .connectors.saml_metadata import IdpMetadata
from .connectors.token import TokenConnector
from .connectors.token_keys import TokenKeyring
from .db import Database
from .fetch import outbound_session
from .lms import build_adapter
from .lms.base import LmsAdapter
from .provisioning import Provisioner
from .sessions import Sessions
from .settings import Settings
from .state import MemoryStore, RedisStore, open_store


@dataclass
class Services:
    settings: Settings
    db: Database
    store: MemoryStore | RedisStore
    audit: Auditor
    sessions: Sessions
    lms: LmsAdapter
    provisioner: Provisioner
    connectors: dict[str, Connector]

    def close(self) -> None:
        self.db.dispose()


def build_services(settings: Settings) -> Services:
    """Wire the stages of the login path; every connector is built here, once."""
    db = Database(settings.database.url, settings.database.pool_size)
    url = settings.store.url.get_secret_value() if settings.store.url else None
    store = open_store(url, settings.store.key_prefix, settings.store.timeout)
    lms = build_adapter(settings.lms, db, settings.rules, settings.outbound_proxy)
    http = outbound_session(settings.outbound_proxy)
    connectors: dict[str, Connector] = {}
    for connection_id, connection in settings.connections.items():
        # A closed set: the connection's `type` is a Literal, so nothing else can appear.
        if connection.type == "token":
            connectors[connection_id] = TokenConnector(
                connection_id,
                connection,
                settings.base_url,
                store,
                settings.limits.max_token_bytes,
                keyring=TokenKeyring(connection_id, connection, store, http),
            )
        elif connection.type in ("oidc", "oauth2"):
            connectors[connection_id] = OidcConnector(
                connection_id, connection, settings.base_url, store, http
            )
        elif connection.type == "saml":
            metadata = IdpMetadata(connection_id, connection, settings.var_dir, http)
            connectors[connection_id] = SamlConnector(
                connection_id, connection, settings.base_url, store, settings.var_dir, metadata
            )
    return Services(
        settings=settings,
        db=db,
        store=store,
        audit=Auditor(db),
        sessions=Sessions(store, settings.session.lifetime),
        lms=lms,
        provisioner=Provisioner(db, store, lms, settings.rules),
        connectors=connectors,
    )
