"""A plain HTTP forward proxy on 127.0.0.1 that records what it relays.

For the tests that check the bridge's outbound requests go through `outbound_proxy`: a
client that uses a proxy sends it the absolute URL (``POST http://host:port/path``), and
the proxy makes the request itself. Only ``http://`` targets (the test servers); no
CONNECT, so an https target through it fails, which is not what these tests are about.

    with ForwardProxy() as proxy:
        ...  # a client configured with proxy.url
        assert proxy.seen == ["POST http://127.0.0.1:40123/webservice/rest/server.php"]
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.services import HOST, Closing

# Hop-by-hop headers (RFC 9110, section 7.6.1) and those http.client sets itself.
_NOT_FORWARDED = frozenset(
    {"connection", "proxy-connection", "keep-alive", "transfer-encoding", "host"}
    | {"content-length", "proxy-authorization", "te", "upgrade", "server", "date"}
)


class _Relay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _relay(self) -> None:
        self.server.record(f"{self.command} {self.path}")
        target = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED}
        upstream = http.client.HTTPConnection(target.hostname or HOST, target.port, timeout=10)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(self.command, path or "/", body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in _NOT_FORWARDED:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((HOST, 0), _Relay)
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def record(self, line: str) -> None:
        with self._lock:
            self.seen.append(line)


class ForwardProxy(Closing):
    """The proxy, serving from a daemon thread until `stop` (or the end of a with block)."""

    def __init__(self) -> None:
        self._server = _ProxyServer()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    @property
    def seen(self) -> list[str]:
        """Each relayed request as ``METHOD absolute-url``, in order."""
        with self._server._lock:
            return list(self._server.seen)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
