"""Reading the docs' tables, for the tests that keep docs/ true to the code."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import ModuleType

from sso_bridge import errors

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


# Refusals outside a protocol's own tree that a login through any connector can end in.
LOGIN_REFUSALS: tuple[type[errors.BridgeError], ...] = (
    errors.MissingAttribute,
    errors.InvalidAttribute,
    errors.AccountBlocked,
    errors.NextNotAllowed,
    errors.RateLimited,
)


def assert_troubleshooting_table(doc: Path, root: type[errors.BridgeError]) -> None:
    """The troubleshooting table of ``doc`` lists exactly the reason codes a login under
    ``root`` (and any login) can end in, each with its HTTP status."""
    known = {
        **reason_codes(errors, root),
        **{cls.code: cls.status for cls in LOGIN_REFUSALS},
    }
    documented = troubleshooting_rows(doc)
    assert sorted(set(documented) - set(known)) == [], f"{doc.name} lists unknown codes"
    assert sorted(set(known) - set(documented)) == [], f"codes missing from {doc.name}"
    wrong = {code: status for code, status in documented.items() if status != str(known[code])}
    assert wrong == {}, "statuses in the table differ from sso_bridge/errors.py"
