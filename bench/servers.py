"""Servers the benchmarks measure: the bridge under gunicorn, and a trivial Flask baseline.

Both run with exactly the gunicorn settings `sso-bridge serve` uses
(`sso_bridge.serve.gunicorn_options`), each in its own process group so the benchmark
can stop it and its workers.

    python bench/servers.py bridge SETTINGS.json PORT WORKERS
    python bench/servers.py trivial PORT WORKERS
    python bench/servers.py python3-saml SETTINGS.json PORT WORKERS
"""

from __future__ import annotations

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


def bridge(settings_json: str, port: int, workers: int) -> Server:
    return Server(["bridge", settings_json, str(port), str(workers)], port, _log(port))


def trivial(port: int, workers: int) -> Server:
    return Server(["trivial", str(port), str(workers)], port, _log(port))


def naive_saml(settings_json: str, port: int, workers: int) -> Server:
    return Server(["python3-saml", settings_json, str(port), str(workers)], port, _log(port))


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

    return app


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

    if kind == "python3-saml":
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
