"""From the bridge's session into the LMS, signed in, at the deep-linked page.

The LMS is an OpenID Connect client of the bridge. When it registered a
third-party-initiated login URL (OIDC Core §4), the person is sent there with
``iss`` and ``target_link_uri``, and the LMS starts a fresh authorization
request that the bridge answers at once from its session. Without one, the
person goes straight to the target and the LMS starts the login itself.

Moodle with ``moodle_login = "oidc"`` has no such URL (auth_oidc starts its login
at ``/auth/oidc/`` and ignores ``target_link_uri``), so it takes the second way: a
page that needs a login makes Moodle remember it (``wantsurl``) and go to its
login page, which auth_oidc (with *Force redirect*) sends to the bridge, and
after sign-in back to that page. Only the front page is different: Moodle shows
it to visitors, so the person would stay signed out; they are sent to
``/auth/oidc/`` instead and land on the site's home page signed in.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from .settings import Settings

# Where Moodle's auth_oidc starts a login (also its redirect URI), and the paths of
# Moodle's front page, which visitors see without one.
OIDC_LOGIN_PATH = "/auth/oidc/"
FRONT_PAGES = frozenset({"", "/", "/index.php"})


def handoff_url(settings: Settings, target: str) -> str:
    """Where to send a freshly signed-in person so they land on ``target`` in the LMS."""
    client = next(
        (c for c in settings.provider.clients if c.client_id == settings.lms.client_id), None
    )
    if client is not None and client.initiate_login_uri is not None:
        separator = "&" if "?" in client.initiate_login_uri else "?"
        query = urlencode({"iss": settings.base_url, "target_link_uri": target})
        return f"{client.initiate_login_uri}{separator}{query}"
    lms = settings.lms
    if lms.type == "moodle" and lms.moodle_login == "oidc" and _front_page(target, lms.base_url):
        return lms.base_url + OIDC_LOGIN_PATH
    return target


def _front_page(target: str, base_url: str) -> bool:
    """Whether ``target`` is the front page of the site at ``base_url`` (scheme and host
    compared without case, as browsers do)."""
    site, page = urlsplit(base_url), urlsplit(target)
    if (page.scheme.lower(), page.netloc.lower()) != (site.scheme.lower(), site.netloc.lower()):
        return False
    if not page.path.startswith(site.path):
        return False
    rest = page.path[len(site.path) :] + (f"?{page.query}" if page.query else "")
    return rest in FRONT_PAGES and not page.fragment
