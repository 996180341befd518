"""`sso-bridge serve` runs the app under gunicorn, as the container does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from .conftest import Keys
from .services import free_port
from .test_cli import config_file


def test_serve_migrates_and_answers_health_checks(tmp_path: Path, keys: Keys) -> None:
    port = free_port()
    config = config_file(tmp_path, keys)
    env = {**os.environ, "SSO_BRIDGE_CONFIG": str(config)}
    sso_bridge = Path(sys.executable).with_name("sso-bridge")
    process = subprocess.Popen(
        [str(sso_bridge), "serve", "--bind", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "serve did not start within 30 s"
                time.sleep(0.2)
        assert ready.status_code == 200
        discovery = requests.get(
            f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=5
        ).json()
        assert discovery["issuer"] == "http://127.0.0.1:5000"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_serve_refuses_several_workers_without_redis(tmp_path: Path, keys: Keys) -> None:
    config = config_file(tmp_path, keys)
    env = {**os.environ, "SSO_BRIDGE_CONFIG": str(config)}
    sso_bridge = Path(sys.executable).with_name("sso-bridge")
    result = subprocess.run(
        [str(sso_bridge), "serve", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "store.url" in result.stderr
