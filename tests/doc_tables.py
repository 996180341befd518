"""Reading the docs' tables, for the tests that keep docs/ true to the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import ModuleType

# A table row whose first cell is `code`: (first cell, second cell, the rest).
ROW = re.compile(r"^\| `([^`]+)` \| ([^|]*)\|(.*)$", re.MULTILINE)


def section(doc: Path, heading: str) -> str:
    """The text under the first heading matching ``heading`` (a regex), up to the next one
    of the same or a higher level."""
    text = doc.read_text(encoding="utf-8")
    match = re.search(rf"^(#+) {heading}$", text, flags=re.MULTILINE)
    assert match, f"no heading {heading!r} in {doc.name}"
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
    return rest[: end.start()] if end else rest


def first_column(text: str) -> list[str]:
    return [name for name, _, _ in ROW.findall(text)]


def reason_codes(module: ModuleType, root: type) -> dict[str, int]:
    """Reason code -> HTTP status of every class under ``root`` in ``module``, root included."""
    classes = [
        cls for _, cls in inspect.getmembers(module, inspect.isclass) if issubclass(cls, root)
    ]
    assert root in classes
    return {cls.code: cls.status for cls in classes}


def troubleshooting_rows(doc: Path) -> dict[str, str]:
    """Reason code -> status as the troubleshooting table of ``doc`` gives them."""
    rows: dict[str, str] = {}
    for code, status, _ in ROW.findall(section(doc, r"\d+\. Troubleshooting")):
        assert code not in rows, f"{code} is listed twice"
        rows[code] = status.strip()
    return rows
