"""A real SCIM 2.0 service provider for the tests: scim2-server, with failures on demand.

`ScimServer` serves the application of the `scim2-server` package (its in-memory storage,
the schemas and resource types of RFC 7643; PATCH, filters, ETags, bulk and sorting
announced) on a free 127.0.0.1 port, from a thread of the test process. In front of it sits a small WSGI layer that
records each request and can, for the next N requests, answer an error status, hold the
answer back past a client's timeout after the request was served, drop the connection,
or run a function first (to change a resource behind the client's back).

The session fixture `scim_server` (import `scim_server_fixture`) fails, never skips, when
scim2-server is not installed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from tests.services import Closing

INSTALL_HINT = "install the project's dependencies: `pip install -e '.[dev]'`"
HOST = "127.0.0.1"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
_SOCKET_KEY = "tests.scim_server.socket"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class MissingPackage(RuntimeError):
    """scim2-server (or scim2-models) is not installed."""


@dataclass(frozen=True)
class SeenRequest:
    """A request the server received, as the tests may check it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class _Fault:
    kind: str  # "status", "delay", "drop" or "before"
    remaining: int
    method: str | None = None
    path: str | None = None
    status: int = 503
    scim_error: bool = False
    retry_after: int | None = None
    seconds: float = 0.0
    served: bool = True
    hook: Callable[[], None] | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and method.upper() != self.method.upper():
            return False
        return self.path is None or self.path in path


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # A request held back on purpose must not delay close().
    block_on_close = False


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        # For drop_next(): the fault layer closes the connection without an answer.
        environ[_SOCKET_KEY] = self.connection
        return environ


def _build_application(
    *, tokens: list[str], basic: tuple[str, str] | None, etag: bool, patch: bool
) -> tuple[WSGIApp, Any]:
    """The scim2-server WSGI application and its storage, as the `scim2-server` command builds them."""
    try:
        from scim2_models import AuthenticationScheme, ScimProvider, UnauthorizedException
        from scim2_server.applications.wsgi import WSGIApplication
        from scim2_server.memory import InMemoryStorage
        from scim2_server.service import ScimService
        from scim2_server.testserver.application import BEARER_TOKEN_SCHEME
        from scim2_server.utils import (
            load_default_resource_types,
            load_default_schemas,
            load_default_service_provider_config,
        )
    except ImportError as exc:
        raise MissingPackage(f"scim2-server is not installed ({exc}): {INSTALL_HINT}") from exc

    config = load_default_service_provider_config()
    assert config.etag is not None and config.patch is not None
    config.etag.supported = etag
    config.patch.supported = patch
    schemes = []
    if tokens:
        schemes.append(BEARER_TOKEN_SCHEME)
    if basic is not None:
        schemes.append(
            AuthenticationScheme(
                type=AuthenticationScheme.Type.httpbasic,
                name="HTTP Basic",
                description="HTTP Basic authentication",
            )
        )
    config.authentication_schemes = schemes or None
    provider = ScimProvider.from_discovery(
        load_default_schemas().values(), load_default_resource_types().values(), config=config
    )
    # Index pagination only (cursor pagination is not announced): no secret needed.
    service = ScimService(provider)
    storage = InMemoryStorage()

    class Application(WSGIApplication):
        """scim2-server's application, with static bearer tokens and/or one Basic login."""

        def check_auth(self, request: Any) -> None:
            if not tokens and basic is None:
                return
            scheme, _, credentials = (request.header("Authorization") or "").partition(" ")
            scheme = scheme.lower()
            if scheme == "bearer" and any(
                hmac.compare_digest(credentials.encode(), token.encode()) for token in tokens
            ):
                return
            if scheme == "basic" and basic is not None:
                try:
                    decoded = base64.b64decode(credentials, validate=True)
                except (binascii.Error, ValueError):
                    decoded = b""
                expected = f"{basic[0]}:{basic[1]}".encode()
                if hmac.compare_digest(decoded, expected):
                    return
            raise UnauthorizedException

    return Application(storage, provider, service=service), storage


class ScimServer(Closing):
    """scim2-server on a free 127.0.0.1 port, started on creation; `close()` stops it.

    :param token: the bearer token clients must send; None for no bearer token.
        By default a random one (see `.token`).
    :param basic: a (username, password) that HTTP Basic clients must send, if any.
        With neither a token nor a login, every request is accepted.
    :param etag: whether the server versions its resources and announces ETags.
    :param patch: whether the server announces and serves PATCH (otherwise 501).
    """

    def __init__(
        self,
        token: str | None = "",
        basic: tuple[str, str] | None = None,
        *,
        etag: bool = True,
        patch: bool = True,
    ) -> None:
        self.token = secrets.token_urlsafe(24) if token == "" else token
        self.basic = basic
        self._app, self.storage = _build_application(
            tokens=[self.token] if self.token else [], basic=basic, etag=etag, patch=patch
        )
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._closing = threading.Event()
        self.requests: list[SeenRequest] = []
        self._server = make_server(
            HOST, 0, self._serve, server_class=_ThreadingServer, handler_class=_Handler
        )
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"scim2-server:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"<ScimServer {self.url}>"

    @property
    def url(self) -> str:
        """The SCIM base URL (the endpoints are under it: /Users, /Groups, ...)."""
        return f"http://{HOST}:{self.port}/v2"

    # --- failures on demand ------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        *,
        method: str | None = None,
        path: str | None = None,
        scim_error: bool = False,
        retry_after: int | None = None,
    ) -> None:
        """Answer `status` to the next `n` matching requests, without serving them.

        By default the body is plain text, as a proxy or load balancer sends it;
        `scim_error=True` sends a SCIM Error object instead.
        """
        self._add(
            _Fault(
                "status",
                n,
                method,
                path,
                status=status,
                scim_error=scim_error,
                retry_after=retry_after,
            )
        )

    def delay_next(
        self, seconds: float, n: int = 1, *, method: str | None = None, path: str | None = None
    ) -> None:
        """Serve the next `n` matching requests, then hold each answer back for `seconds`.

        A client whose timeout is shorter gives up, though the server did the work:
        a create that "timed out" has created the resource.
        """
        self._add(_Fault("delay", n, method, path, seconds=seconds))

    def drop_next(
        self,
        n: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        served: bool = False,
    ) -> None:
        """Close the connection of the next `n` matching requests without an answer.

        With `served=True` the request is served first (its answer is lost).
        """
        self._add(_Fault("drop", n, method, path, served=served))

    def before_next(
        self,
        hook: Callable[[], None],
        n: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Run `hook()` just before serving the next `n` matching requests."""
        self._add(_Fault("before", n, method, path, hook=hook))

    def clear_faults(self) -> None:
        """Forget every failure still pending."""
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Forget every resource, pending failure and recorded request."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()
        self.storage.resources = []

    # --- what the server holds ---------------------------------------------------------

    def resources(self, resource_type: str) -> list[dict[str, Any]]:
        """The stored resources of a type ("User", "Group"), as SCIM JSON."""
        return [
            resource.model_dump()
            for resource in self.storage.resources
            if resource.meta is not None and resource.meta.resource_type == resource_type
        ]

    def users(self, external_id: str | None = None) -> list[dict[str, Any]]:
        """The stored users, or those whose externalId is exactly `external_id`."""
        users = self.resources("User")
        if external_id is None:
            return users
        return [user for user in users if user.get("externalId") == external_id]

    def groups(self, display_name: str | None = None) -> list[dict[str, Any]]:
        """The stored groups, or those whose displayName is exactly `display_name`."""
        groups = self.resources("Group")
        if display_name is None:
            return groups
        return [group for group in groups if group.get("displayName") == display_name]

    def seen(self, method: str | None = None, path: str | None = None) -> list[SeenRequest]:
        """The requests received so far, optionally those of one method or path part."""
        with self._lock:
            requests = list(self.requests)
        return [
            request
            for request in requests
            if (method is None or request.method == method.upper())
            and (path is None or path in request.path)
        ]

    # --- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving; answers held back are released at once."""
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # --- the WSGI layer in front of scim2-server ----------------------------------------

    def _add(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError("n must be at least 1")
        with self._lock:
            self._faults.append(fault)

    def _take(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _serve(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        with self._lock:
            self.requests.append(
                SeenRequest(method, path, environ.get("QUERY_STRING", ""), headers)
            )

        fault = self._take(method, path)
        if fault is None:
            return self._app(environ, start_response)

        if fault.kind == "before":
            assert fault.hook is not None
            fault.hook()
            return self._app(environ, start_response)

        if fault.kind == "delay":
            body = list(self._app(environ, start_response))
            self._closing.wait(fault.seconds)
            return body

        if fault.kind == "drop":
            if fault.served:
                list(self._app(environ, lambda *args: None))
            else:
                _read_body(environ)
            sock: socket.socket = environ[_SOCKET_KEY]
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            # wsgiref ends the exchange quietly on this exception.
            raise ConnectionAbortedError("dropped by the test server")

        _read_body(environ)
        return _error_answer(fault, start_response)


def _read_body(environ: dict[str, Any]) -> None:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > 0:
        environ["wsgi.input"].read(length)


def _error_answer(fault: _Fault, start_response: Callable[..., Any]) -> list[bytes]:
    try:
        phrase = HTTPStatus(fault.status).phrase
    except ValueError:
        phrase = "Error"
    if fault.scim_error:
        body = json.dumps(
            {"schemas": [ERROR_SCHEMA], "status": str(fault.status), "detail": phrase}
        ).encode()
        content_type = "application/scim+json"
    else:
        body = f"{fault.status} {phrase}\n".encode()
        content_type = "text/plain"
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    if fault.retry_after is not None:
        headers.append(("Retry-After", str(fault.retry_after)))
    start_response(f"{fault.status} {phrase}", headers)
    return [body]


# --- pytest fixture ------------------------------------------------------------------


def start_scim_server(**options: Any) -> ScimServer:
    """A new ScimServer; the test fails (never skips) when scim2-server is missing."""
    try:
        return ScimServer(**options)
    except MissingPackage as exc:
        missing = str(exc)
    pytest.fail(missing, pytrace=False)


@pytest.fixture(scope="session", name="scim_server")
def scim_server_fixture() -> Iterator[ScimServer]:
    """A real scim2-server for the whole session, with a bearer token (`.url`, `.token`).

    Tests share it: use your own external ids and group names, and leave no failure
    pending (`clear_faults()`).
    """
    server = start_scim_server()
    try:
        yield server
    finally:
        server.close()


__all__ = ["ScimServer", "SeenRequest", "scim_server_fixture", "start_scim_server"]
