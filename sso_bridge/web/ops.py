"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ..errors import BridgeError
from .context import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process answers; says nothing about its dependencies (that is /readyz)."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the database and the ephemeral store both answer."""
    checks: dict[str, str] = {}
    svc = services()
    for name, probe in (("database", svc.db.ping), ("store", svc.store.ping)):
        try:
            probe()
            checks[name] = "ok"
        except BridgeError as exc:
            checks[name] = exc.code
        except Exception as exc:
            checks[name] = type(exc).__name__
    ready = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ready else "unavailable", checks=checks), 200 if ready else 503


@bp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), mimetype=CONTENT_TYPE_LATEST)
