"""The whole click path in a real browser (headless Chromium): what an employee does.

A scripted HTTP client cannot catch what only a browser does: the auto-submitting
form, the Origin header it sends (or `null`, under some referrer policies), SameSite
cookie rules across the redirects, and the Content-Security-Policy of every page.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sso_bridge.settings import load_settings

from .conftest import Demo

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--virtual-time-budget=20000",
]


def browse(url: str, profile: Path) -> str:
    """The DOM after the browser has followed every script, form post and redirect."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: run `make test` or scripts/install-system-deps.sh")
    result = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_a_course_link_in_the_portal_lands_on_the_course_signed_in(
    demo: Demo, tmp_path: Path
) -> None:
    dom = browse(demo.url("/portal/training/open?course=gdpr-basics"), tmp_path / "profile")
    assert "GDPR Basics" in dom
    assert 'data-field="employee_id">E1001' in dom
    from sso_bridge.admin_queries import open_services

    with open_services(load_settings(demo.var_dir / "demo.toml")) as services:
        events = [(e["event"], e["outcome"], e["reason"]) for e in services.audit.tail(10)]
    assert ("login", "success", "created") in events
    assert ("oidc_token", "success", "token_issued") in events
