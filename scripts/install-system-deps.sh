#!/usr/bin/env bash
# Install the Debian 12 packages that the test suite needs, and only the missing ones.
#
# Idempotent: when everything is present it exits 0 at once, without calling apt.
# Needs root for an install: it uses sudo when run as another user, and otherwise
# prints the command to run and exits 1.
set -euo pipefail

PYTHON="${PYTHON:-python3}"

has_deb() {
    dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'
}

# --demo: only what `make demo` needs (a working `python3 -m venv`); the demo runs on
# embedded defaults and needs no servers.
mode=${1:-test}

missing=()

if [[ $mode == --demo ]]; then
    "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
else

# The tests start their own redis-server and PostgreSQL cluster (tests/services.py).
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)

# Debian's python3 leaves ensurepip out; without it `python3 -m venv` fails.
"$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)

# Node and npm run the token snippet tests and the test OpenID Provider (oidc-provider,
# which needs Node 20.18 or later; see node_is_recent below). Debian's npm only when
# there is none at all: it depends on Debian's own nodejs.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

# The browser flow tests drive a real headless Chromium (tests/flows/test_browser.py).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

# The SAML flow tests will run a real IdP (SimpleSAMLphp) under php's built-in server.
for pkg in php-cli php-xml php-mbstring simplesamlphp; do
    has_deb "$pkg" || missing+=("$pkg")
done

# pysaml2's signature backend, for the SAML benchmark's pysaml2 baseline (bench/saml_acs.py).
command -v xmlsec1 >/dev/null 2>&1 || missing+=(xmlsec1)

fi

node_is_recent() {
    node -e 'const [a, b] = process.versions.node.split(".").map(Number);
             process.exit(a > 20 || (a === 20 && b >= 18) ? 0 : 1)' 2>/dev/null
}

# Debian 12's own Node is 18: too old for the test OpenID Provider. The npm registry's
# `node` package carries a real Node binary; installed globally it lands in
# /usr/local/bin, ahead of /usr/bin on PATH.
ensure_recent_node() {
    [[ $mode == --demo ]] && return 0
    node_is_recent && return 0
    echo "install-system-deps: Node $(node --version 2>/dev/null) is older than 20.18; installing node@20 from npm"
    "${as_root[@]}" npm install -g --no-audit --no-fund node@20
    hash -r
    node_is_recent || { echo "install-system-deps: still no Node >= 20.18 on PATH" >&2; exit 1; }
}

if ((${#missing[@]} == 0)); then
    if ((EUID == 0)); then as_root=(); else as_root=(sudo); fi
    ensure_recent_node
    exit 0
fi

install_cmd=(apt-get -o Acquire::Retries=3 install -y --no-install-recommends "${missing[@]}")

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: no apt-get here; install these by hand: ${missing[*]}" >&2
    exit 1
fi

if ((EUID == 0)); then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install-system-deps: missing ${missing[*]}; as root, run:" >&2
    echo "  apt-get update && DEBIAN_FRONTEND=noninteractive ${install_cmd[*]}" >&2
    exit 1
fi

echo "install-system-deps: installing ${missing[*]}"

# The packages' postinst scripts would start system-wide redis, PostgreSQL and
# apache2 services. The tests never use them (they start their own servers on free
# ports), so, unless the machine already has a policy, forbid service starts for the
# duration of the install. A failed start is harmless either way.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod 0755 "$policy"
    trap '"${as_root[@]}" rm -f "$policy"' EXIT
fi

"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive "${install_cmd[@]}"
ensure_recent_node
