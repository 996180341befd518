"""The demo (portal, bridge, LMS) served for real on a free port, for whole-login tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from sso_bridge.demo import build_demo_app

HOST = "127.0.0.1"


@dataclass
class Demo:
    base: str
    var_dir: Path
    http: requests.Session
    bridge: Any
    """The bridge's Flask app (its services are in ``bridge.extensions["sso_bridge"]``)."""

    def url(self, path: str) -> str:
        return self.base + path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_demo(var_dir: Path, extra_config: str = "") -> Iterator[Demo]:
    """The demo stack on a free port, with ``extra_config`` appended to its configuration."""
    port = _free_port()
    app = build_demo_app(HOST, port, var_dir, extra_config)
    # Threaded, as in `sso-bridge demo`: the LMS calls the bridge from inside a request.
    server = make_server(HOST, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    http = requests.Session()
    http.trust_env = False  # never through a proxy: the server is on loopback
    # As a browser does on a POST from the portal's pages (all on this one origin here).
    http.headers["Origin"] = f"http://{HOST}:{port}"
    try:
        yield Demo(f"http://{HOST}:{port}", var_dir, http, app.app)
    finally:
        http.close()
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    with running_demo(tmp_path / "demo") as running:
        yield running
