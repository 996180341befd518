"""`make bench`: every benchmark in bench/, each printing its same-run baselines and ratios."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    ["saml_acs.py"],
    ["saml_http.py"],
    ["token_handoff.py", "--postgres", "--storm"],
    ["oidc_callback.py"],
]


def main() -> int:
    failed = 0
    started = time.monotonic()
    for name, *options in BENCHMARKS:
        print(f"== {name} {' '.join(options)}", flush=True)
        began = time.monotonic()
        failed |= subprocess.call([sys.executable, "-W", "ignore", str(HERE / name), *options])
        print(f"== {name}: {time.monotonic() - began:.0f} s", flush=True)
    # The whole run must stay short enough to repeat (docs/performance.md gives its time).
    print(f"== total: {time.monotonic() - started:.0f} s")
    return failed


if __name__ == "__main__":
    sys.exit(main())
