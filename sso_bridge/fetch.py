"""The bridge's outbound HTTP client, and bounded fetches of the documents it trusts:
IdP metadata, portal JWKS."""

from __future__ import annotations

import time

import requests


def outbound_session(proxy: str | None) -> requests.Session:
    """The HTTP client for the bridge's own requests (metadata, JWKS, the LMS API).

    The environment's proxy variables and .netrc are ignored (trust_env): what the
    bridge fetches, and through what, is configuration (`outbound_proxy`), not ambient
    state.
    """
    session = requests.Session()
    session.trust_env = False
    if proxy:
        session.proxies = {"http": proxy, "https": proxy}
    return session


def pooled(session: requests.Session, pool: requests.Session) -> requests.Session:
    """``session`` (a per-login client with its own state, such as Authlib's OAuth2Session)
    sending through ``pool``'s connections and proxy.

    urllib3's pools are thread-safe and keep connections to the provider alive, so a
    login does not open a new TCP (and TLS) connection for its token request. Never
    close such a session: that would close the shared pool.
    """
    session.trust_env = False
    session.proxies = dict(pool.proxies)
    for prefix, adapter in pool.adapters.items():
        session.mount(prefix, adapter)
    return session


class FetchError(ValueError):
    """The document could not be fetched; the message says why (never a secret)."""


class FetchTooLarge(FetchError):
    """More bytes than the caller allows."""


class FetchTooSlow(FetchError):
    """The body took longer than the caller allows, in total."""


def read_bounded(response: requests.Response, max_bytes: int, deadline: float, what: str) -> bytes:
    """A streamed response's body, at most ``max_bytes``, read by ``deadline`` (monotonic).

    The limit covers the whole body, not each read, so a server dribbling bytes cannot
    hold a worker; the size limit keeps a broken or hostile server from filling memory.
    """
    body = bytearray()
    for chunk in response.iter_content(65536):
        body += chunk
        if len(body) > max_bytes:
            raise FetchTooLarge(f"{what} sent more than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise FetchTooSlow(f"{what} took longer than its time limit")
    return bytes(body)


def fetch_bounded(http: requests.Session, url: str, max_bytes: int, seconds: float) -> bytes:
    """The body at ``url``: HTTP 200 only, no redirects, bounded in size and in total time.

    Redirects are not followed: the configured URL is the one trusted, and a 3xx is
    reported as what it is.
    """
    try:
        with http.get(url, timeout=seconds, allow_redirects=False, stream=True) as response:
            if response.status_code != 200:
                raise FetchError(f"{url} answered HTTP {response.status_code}")
            return read_bounded(response, max_bytes, time.monotonic() + seconds, url)
    except requests.RequestException as exc:
        raise FetchError(f"{url}: {type(exc).__name__}") from None
