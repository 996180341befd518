"""Servers the benchmarks measure: the bridge under gunicorn, and a trivial Flask baseline.

Both run with exactly the gunicorn settings `sso-bridge serve` uses
(`sso_bridge.serve.gunicorn_options`), each in its own process group so the benchmark
can stop it and its workers.

    python bench/servers.py bridge SETTINGS.json PORT WORKERS
    python bench/servers.py trivial PORT WORKERS
    python bench/servers.py python3-saml SETTINGS.json PORT WORKERS
    python bench/servers.py oidc-provider SETTINGS.json PORT
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Server:
    """A server subprocess; `close()` stops the master and its workers."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
        self._wait()

    def _wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()[-3000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        self.close()
        raise RuntimeError(f"server did not listen within {timeout} s")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def bridge(settings_json: str, port: int, workers: int) -> Server:
    return Server(["bridge", settings_json, str(port), str(workers)], port, _log(port))


def trivial(port: int, workers: int) -> Server:
    return Server(["trivial", str(port), str(workers)], port, _log(port))


def naive_saml(settings_json: str, port: int, workers: int) -> Server:
    return Server(["python3-saml", settings_json, str(port), str(workers)], port, _log(port))


def oidc_provider(settings_json: str, port: int) -> Server:
    """The local OpenID Provider of bench/oidc_callback.py: one worker, so one table of codes."""
    return Server(["oidc-provider", settings_json, str(port)], port, _log(port))


def _log(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"sso-bridge-bench-{port}.log"


def _trivial_app() -> Any:
    from flask import Flask, redirect

    app = Flask("trivial")

    @app.post("/token/<connection_id>")
    def handoff(connection_id: str) -> Any:
        # The same shape of answer as the bridge's: read a form, redirect.
        from flask import request

        return redirect(f"/lms?c={connection_id}&n={len(request.form.get('token', ''))}", 303)

    @app.get("/oidc/<connection_id>/callback")
    def callback(connection_id: str) -> Any:
        # The same shape as the bridge's OIDC callback: a query and a cookie in, a 303 out.
        from flask import request

        size = len(request.args.get("code", "")) + len(request.cookies)
        return redirect(f"/lms?c={connection_id}&n={size}", 303)

    return app


class OidcProvider:
    """A WSGI OpenID Provider cheap enough not to dominate what it serves.

    Discovery and JWKS are fixed documents. The token endpoint answers each prepared
    code once, with the response prepared for it: the ID tokens are signed by the
    benchmark before the clock starts, so while it is measured the provider checks
    only what any provider must (the client's Basic credentials, the code, PKCE S256)
    and signs nothing. `POST /prepared` (a JSON object code → [code_challenge,
    token response]) loads codes; it exists only here, on 127.0.0.1.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        # Imported here, not above: the other servers' workers (whose RSS is measured)
        # need not load the tests' provider module.
        from tests.oidc_rogue import s256

        self.s256 = s256
        issuer = settings["issuer"]
        self.discovery = json.dumps(
            {
                "issuer": issuer,
                # Never called: the benchmark reads the login's redirect and answers it.
                "authorization_endpoint": f"{issuer}/authorize",
                "token_endpoint": f"{issuer}/token",
                "jwks_uri": f"{issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "authorization_response_iss_parameter_supported": True,
            }
        ).encode()
        self.jwks = json.dumps(settings["jwks"]).encode()
        credentials = f"{settings['client_id']}:{settings['client_secret']}".encode()
        self.basic = f"Basic {base64.b64encode(credentials).decode()}".encode()
        self.codes: dict[str, tuple[str, bytes]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        if path == "/.well-known/openid-configuration":
            return self._answer(start_response, "200 OK", self.discovery)
        if path == "/jwks":
            return self._answer(start_response, "200 OK", self.jwks)
        if path == "/token" and method == "POST":
            return self._token(environ, start_response)
        if path == "/prepared" and method == "POST":
            for code, (challenge, body) in json.loads(self._body(environ)).items():
                self.codes[code] = (challenge, body.encode())
            return self._answer(start_response, "200 OK", b"{}")
        return self._answer(start_response, "404 Not Found", b'{"error": "not_found"}')

    def _token(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "").encode()
        if not hmac.compare_digest(given, self.basic):
            return self._answer(start_response, "401 Unauthorized", b'{"error": "invalid_client"}')
        form = {k: v[0] for k, v in parse_qs(self._body(environ).decode()).items()}
        # dict.pop is atomic under the GIL: a code is answered once, whichever thread asks.
        prepared = self.codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or prepared is None:
            return self._answer(start_response, "400 Bad Request", b'{"error": "invalid_grant"}')
        challenge, body = prepared
        computed = self.s256(form.get("code_verifier", ""))
        if not hmac.compare_digest(computed.encode(), challenge.encode()):
            return self._answer(start_response, "400 Bad Request", b'{"error": "invalid_grant"}')
        return self._answer(start_response, "200 OK", body)

    @staticmethod
    def _body(environ: dict[str, Any]) -> bytes:
        return environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))

    @staticmethod
    def _answer(start_response: Any, status: str, body: bytes) -> list[bytes]:
        start_response(
            status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]


def _naive_saml_app(settings: dict[str, Any], port: int) -> Any:
    """An ACS written the way python3-saml's demo Flask app writes it."""
    from flask import Flask, redirect, request
    from onelogin.saml2.auth import OneLogin_Saml2_Auth

    app = Flask("python3-saml")

    @app.post("/saml/<connection_id>/acs")
    def acs(connection_id: str) -> Any:
        auth = OneLogin_Saml2_Auth(
            {
                "https": "off",
                "http_host": f"127.0.0.1:{port}",
                "script_name": request.path,
                "get_data": {},
                "post_data": request.form.copy(),
            },
            settings,
        )
        auth.process_response()
        if auth.get_errors() or not auth.is_authenticated():
            return auth.get_last_error_reason() or "refused", 400
        return redirect(f"/lms?sub={auth.get_nameid()}", 303)

    return app


def _main(argv: list[str]) -> None:
    from gunicorn.app.base import BaseApplication

    from sso_bridge.serve import gunicorn_options, run
    from sso_bridge.settings import Settings

    kind = argv[0]
    if kind == "bridge":
        settings = Settings(**json.loads(Path(argv[1]).read_text()))
        run(settings, f"127.0.0.1:{argv[2]}", int(argv[3]))
        return

    if kind == "oidc-provider":
        provider_settings = json.loads(Path(argv[1]).read_text())
        port, workers = int(argv[2]), 1

        def app() -> Any:
            return OidcProvider(provider_settings)
    elif kind == "python3-saml":
        settings_dict = json.loads(Path(argv[1]).read_text())
        port, workers = int(argv[2]), int(argv[3])

        def app() -> Any:
            return _naive_saml_app(settings_dict, port)
    else:
        port, workers = int(argv[1]), int(argv[2])
        app = _trivial_app

    class Baseline(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in gunicorn_options(f"127.0.0.1:{port}", workers).items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app()

    Baseline().run()


if __name__ == "__main__":
    _main(sys.argv[1:])
