"""The bridge's outbound HTTP: per-login clients share one pool of kept-alive connections."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session

from sso_bridge.fetch import outbound_session, pooled


class KeepAliveServer:
    """An HTTP/1.1 server that notes the client port of every request."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.ports.append(self.client_address[1])
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[KeepAliveServer]:
    running = KeepAliveServer()
    yield running
    running.server.shutdown()
    running.server.server_close()


def test_per_login_clients_reuse_the_pools_connection(server: KeepAliveServer) -> None:
    pool = outbound_session(None)
    for _ in range(3):  # three logins, each with its own OAuth2Session
        client = pooled(OAuth2Session(client_id="bridge"), pool)
        assert client.get(server.url, timeout=5, withhold_token=True).status_code == 200
    assert len(server.ports) == 3
    assert len(set(server.ports)) == 1, "a new connection per login"


def test_unpooled_clients_open_a_connection_each(server: KeepAliveServer) -> None:
    # What the test above tells apart: without the pool, each client connects anew.
    for _ in range(2):
        with requests.Session() as client:
            client.get(server.url, timeout=5)
    assert len(set(server.ports)) == 2


def test_a_pooled_client_takes_the_pools_proxy_and_ignores_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://ambient.invalid:3128")
    pool = outbound_session("http://proxy.example:3128")
    client = pooled(OAuth2Session(client_id="bridge"), pool)
    assert client.trust_env is False
    assert client.proxies == {
        "http": "http://proxy.example:3128",
        "https": "http://proxy.example:3128",
    }
