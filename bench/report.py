"""What every HTTP benchmark shares: its command line, its table rows and its JSON file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def http_arguments(description: str | None) -> argparse.ArgumentParser:
    """The options of every HTTP benchmark (a script adds its own to the parser)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seconds", type=float, default=10.0, help="per HTTP scenario")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    return parser


def row(name: str, result: dict[str, Any], baseline: float | None = None) -> str:
    ratio = f"{result['per_second'] / baseline:6.2f}x" if baseline else "       "
    line = (
        f"{name:<52} {result['per_second']:>9.0f} {result['p50_ms']:>8.2f}"
        f" {result['p99_ms']:>8.2f} {ratio}"
    )
    if result.get("unexpected"):
        # A baseline that answered errors is fast for the wrong reason: say so loudly.
        line += (
            f"\n    !! {result['unexpected']} unexpected answers: {result['first_unexpected']!r}"
        )
    return line


def save(name: str, results: dict[str, Any]) -> None:
    """Write ``results`` to bench/results/<name>.json and say where."""
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {out.relative_to(ROOT)}")
