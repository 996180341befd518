"""Reading an HTML form the way a browser submits it (the provider's form_post page)."""

from __future__ import annotations

import html.parser
from typing import Any


def form_fields(response: Any) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of the first form on the page."""
    found: dict[str, Any] = {"action": None, "fields": {}}

    class Form(html.parser.HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            values = dict(attrs)
            if tag == "form" and found["action"] is None:
                found["action"] = values["action"]
            elif tag == "input" and values.get("type") == "hidden":
                found["fields"][values["name"]] = values["value"]

    Form().feed(response.get_data(as_text=True))
    if found["action"] is None:
        raise AssertionError(f"no form on the page: {response.status_code}")
    return found["action"], found["fields"]
