# syntax=docker/dockerfile:1

# --- build: install the project and its pinned dependencies into /opt/venv ---------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
RUN python -m venv /opt/venv

# Every dependency is pinned in pyproject.toml and ships a manylinux wheel (lxml and
# xmlsec bundle their libxml2), so no compiler or -dev package is needed here.
COPY pyproject.toml README.md ./
COPY sso_bridge ./sso_bridge
RUN /opt/venv/bin/pip install --no-cache-dir .

# --- run: the venv only, as an unprivileged user -----------------------------------
FROM python:3.11-slim-bookworm

# The bridge writes into var/ under its working directory (var_dir: the embedded SQLite
# database, cached metadata). Mount a volume at /var/lib/sso-bridge/var to keep it, or
# configure PostgreSQL.
RUN groupadd --system --gid 10001 sso-bridge \
    && useradd --system --uid 10001 --gid sso-bridge \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin sso-bridge \
    && install -d -o sso-bridge -g sso-bridge -m 0750 /var/lib/sso-bridge /var/lib/sso-bridge/var

COPY --from=builder /opt/venv /opt/venv

# Configuration: mount the TOML file at /etc/sso-bridge/config.toml (read-only), or
# point SSO_BRIDGE_CONFIG elsewhere; the bridge refuses to start if that file is
# missing. Any key can also be set from the environment (SSO_BRIDGE_ prefix, __ for
# nesting); mount secrets as files in a directory named by SSO_BRIDGE_SECRETS_DIR.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SSO_BRIDGE_CONFIG=/etc/sso-bridge/config.toml

USER 10001:10001
WORKDIR /var/lib/sso-bridge

EXPOSE 8000

# slim has no curl; urlopen raises on anything but a 2xx, which fails the check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["sso-bridge"]
CMD ["serve", "--bind", "0.0.0.0:8000"]
