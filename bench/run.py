"""`make bench`: every benchmark in bench/, each printing its same-run baselines and ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [["saml_acs.py"], ["saml_http.py"], ["token_handoff.py", "--postgres", "--storm"]]


def main() -> int:
    failed = 0
    for name, *options in BENCHMARKS:
        print(f"== {name} {' '.join(options)}", flush=True)
        failed |= subprocess.call([sys.executable, "-W", "ignore", str(HERE / name), *options])
    return failed


if __name__ == "__main__":
    sys.exit(main())
