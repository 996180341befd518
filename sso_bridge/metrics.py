"""Prometheus metrics (process-wide, as prometheus_client expects)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LOGINS = Counter(
    "sso_bridge_logins_total",
    "Logins by connection and outcome (success, or the refusal's reason code).",
    ["connection", "outcome"],
)
LOGIN_SECONDS = Histogram(
    "sso_bridge_login_duration_seconds",
    "Time from the upstream message's arrival to the handoff redirect.",
    ["connection"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
